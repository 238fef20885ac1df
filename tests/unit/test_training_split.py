"""The training run's pure parts: the deterministic stratified split and the precision choice."""

from __future__ import annotations

import random

from services.training import Example, precision_args, split


def examples() -> list[Example]:
    return [Example(f"text {label} {i}", label) for label in ("a", "b", "c") for i in range(20)] + [
        Example("lonely", "d")
    ]


def test_split_is_stratified_deterministic_and_order_free() -> None:
    data = examples()
    train, test = split(data, holdout=0.2)
    per_label = {label: sum(e.label == label for e in test) for label in "abc"}
    assert all(1 <= n <= 9 for n in per_label.values()), per_label  # about 20% of each label, never none
    assert Example("lonely", "d") in train  # one example: training only
    shuffled = data[:]
    random.Random(7).shuffle(shuffled)
    assert split(shuffled, holdout=0.2) == (train, test)


def test_a_text_keeps_its_side_as_labels_grow() -> None:
    _, test = split(examples(), holdout=0.2)
    more = examples() + [Example(f"new {i}", "a") for i in range(5)]
    _, test_more = split(more, holdout=0.2)
    assert {e.text for e in test} <= {e.text for e in test_more}


def test_precision_is_mixed_on_a_gpu_only() -> None:
    assert precision_args("cpu", bf16_supported=True) == {"bf16": False, "fp16": False}
    assert precision_args("cuda", bf16_supported=True) == {"bf16": True, "fp16": False}
    assert precision_args("cuda:1", bf16_supported=False) == {"bf16": False, "fp16": True}
