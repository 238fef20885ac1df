"""How a run judges a version with few labels (every label trains, k-fold estimate, the serving
version scored on the same folds) and what it counts as unlabeled, on SQLite and embedded Qdrant
with the real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.classify import tasks
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.runtime import Runtime
from services.training import labels, registry, runs
from tests.conftest import open_runtime, settings_for
from tests.integration.test_classification import CARD, REFUND, accept, add_support_task, train


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    settings = settings_for(data_dir, model_reload_s=0.2, train_fine_tune_min_labels=10_000, train_kfold=4)
    with open_runtime(settings, encoder) as rt:
        yield rt


def test_with_few_labels_every_label_trains_and_the_estimate_is_k_fold(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_support_task(runtime)  # 12 labels per class: few
    seen: list[str] = []
    real = runs.train_head

    def spy(encode: Any, train: Any, **kwargs: Any) -> Any:
        seen.extend(e.text for e in train)
        return real(encode, train, **kwargs)

    monkeypatch.setattr(runs, "train_head", spy)
    outcome = train(runtime, "support")
    m = outcome.metrics
    assert set(CARD + REFUND) <= set(seen)  # the head that ships learned from every label
    assert (m["train"], m["holdout"]) == (24, 0)
    assert m["estimate"]["method"].startswith("4-fold") and m["estimate"]["trained_on_every_label"]
    assert m["estimate"]["optimistic"] is False  # a head on the serving encoder: it never saw these labels
    assert len(m["folds"]) == 4 and m["se"] is not None and m["n"] == 24
    # The zero-shot version scored the same way: the same folds of the same 24 labels.
    assert m["baseline"]["n"] == 24 and len(m["baseline"]["folds"]) == 4
    assert outcome.promoted and m["accuracy"] >= m["baseline"]["accuracy"] >= 0.9


class NoiseEncoder:
    """An encoder that lost what it knew: random unit vectors."""

    version = "noise"

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.random.default_rng(len(texts)).normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_under_k_fold_a_worse_encoder_is_not_promoted_over_the_active_version(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_support_task(runtime)
    first = train(runtime, "support")
    assert first.promoted
    real_fit = runs.Trainer._fit

    def broken_fit(self: runs.Trainer, *args: Any, **kwargs: Any) -> Any:
        fitted = real_fit(self, *args, **kwargs)
        fitted.encoder = NoiseEncoder()  # type: ignore[assignment]
        return fitted

    monkeypatch.setattr(runs.Trainer, "_fit", broken_fit)
    second = train(runtime, "support")
    m = second.metrics
    assert not second.promoted and any("not promoted" in note for note in second.notes)
    assert m["baseline"]["version"] == first.version and m["baseline"]["n"] == m["n"] == 24
    assert m["accuracy"] < m["baseline"]["accuracy"]
    with runtime.db.session_scope() as s:
        assert registry.get_version(s, version=first.version).status == "active"


def test_under_k_fold_a_new_head_on_the_active_encoder_is_promoted(runtime: Runtime) -> None:
    # The folds fit their own heads, so two heads on one encoder score alike: the new one, trained
    # on the labels in force, wins the tie (with a holdout it must beat the margin).
    add_support_task(runtime)
    first = train(runtime, "support")
    with runtime.db.session_scope() as s:
        labels.record(
            s,
            labels=[labels.LabelIn(text="where is my card, it never came", task="support", label="card_arrival")],
            max_labels=10,
            max_text_chars=1000,
        )
    second = train(runtime, "support")
    assert first.promoted and second.promoted and second.metrics["n"] == 25
    assert second.metrics["baseline"]["version"] == first.version


def test_the_unlabeled_pool_never_holds_a_labeled_text(runtime: Runtime) -> None:
    with runtime.db.session_scope() as s:
        tasks.add_task(s, name="support", kind="ticket", labels=[], open_labels=True)
    plain = ["my card is stuck at the post office", "refund the headphones please", "card still missing"]
    by_id = ["the metal card did not come", "money back for the lamp"]
    ids = accept(runtime, [("ticket", t) for t in plain + by_id])
    with runtime.db.session_scope() as s:
        items = [
            labels.LabelIn(event_id=ids[3], task="support", label="refund"),  # corrected below
            labels.LabelIn(event_id=ids[4], task="support", label="refund"),
        ]
        items += [labels.LabelIn(text=t, task="support", label="card_arrival") for t in CARD]  # new events
        items += [labels.LabelIn(text=t, task="support", label="refund") for t in REFUND]
        labels.record(s, labels=items, max_labels=1000, max_text_chars=1000)
    with runtime.db.session_scope() as s:
        labels.record(
            s,
            labels=[labels.LabelIn(event_id=ids[3], task="support", label="card_arrival")],
            max_labels=10,
            max_text_chars=1000,
        )
    # The same text as a labeled one, ingested again under another id, is not unlabeled either.
    with runtime.db.session_scope() as s:
        event = ingest.EventIn(id="again", kind="ticket", text=CARD[0])  # type: ignore[arg-type]
        ingest.accept(s, events=[event], limits=ingest.Limits(max_events=10, max_text_chars=1000))
    # Read up to 3: the labeled events (ids "text-...", first in id order) must not take the places.
    runtime.settings.train_pseudo_max = 3
    assert sorted(runtime.trainer._unlabeled("ticket", "support")) == sorted(plain)
    outcome = train(runtime, "support")
    assert outcome.metrics["unlabeled_pool"] == 3
    assert 0 <= outcome.metrics["pseudo_labels_kept"] <= 3
    assert outcome.metrics["pseudo_labels_kept"] == outcome.metrics["head_pseudo_labeled"]
