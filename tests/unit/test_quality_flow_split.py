"""The flow bench's dev split: what it measures on must never be what it trained on."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from quality_flow import dev_split

from services.training.dataset import Example


def _examples(n: int) -> list[Example]:
    return [Example(f"text number {i}", f"label{i % 3}") for i in range(n)]


def test_a_small_file_keeps_a_fifth_for_dev_test_and_a_large_one_two_thousand() -> None:
    train, test = dev_split(_examples(3872), None)
    assert (len(train), len(test)) == (3872 - 774, 774)
    train, test = dev_split(_examples(10003), None)
    assert (len(train), len(test)) == (8003, 2000)


def test_the_split_is_disjoint_deduplicated_and_the_same_every_time() -> None:
    examples = _examples(500) + _examples(50)  # 50 repeated texts
    train, test = dev_split(examples, 100)
    assert len(test) == 100 and len(train) == 400
    assert not {e.text for e in train} & {e.text for e in test}
    again = dev_split(list(reversed(examples)), 100)[1]  # whatever the file's order
    assert {e.text for e in again} == {e.text for e in test}
