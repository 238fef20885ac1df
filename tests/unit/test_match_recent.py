"""What a match keeps of its SQL reads: served for recent.CHECK_S per served model pair, nothing kept
from a read that overlapped a change."""

from __future__ import annotations

import pytest

from services.matching import recent
from services.matching.recent import Entry, Recent

ENTRY = Entry("When will my card arrive?", "In 5 days.", frozenset({"When will my card arrive?"}))


def test_what_was_read_is_served_for_its_model_pair_until_the_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = Recent()
    seen = kept.look("models-1", {"card"})
    assert seen.calibration is None and seen.entries == {} and seen.missing == {"card"}
    kept.keep(seen, "models-1", "calibration-1", {"card": ENTRY})
    again = kept.look("models-1", {"card", "refund"})
    assert again.calibration == "calibration-1" and again.entries == {"card": ENTRY} and again.missing == {"refund"}
    assert kept.look("models-2", {"card"}).calibration is None  # a new encoder or head: read again
    monkeypatch.setattr(recent, "CHECK_S", 0.0)
    late = kept.look("models-1", {"card"})
    assert late.calibration is None and late.missing == {"card"}


def test_a_read_that_overlapped_a_change_keeps_nothing() -> None:
    kept = Recent()
    seen = kept.look("models", {"card"})
    kept.changed()  # e.g. the entry was written while this read was under way
    kept.keep(seen, "models", "old calibration", {"card": ENTRY})
    assert kept.look("models", {"card"}).missing == {"card"}
    kept.keep(kept.look("models", {"card"}), "models", "calibration", {"card": ENTRY})
    kept.changed()
    after = kept.look("models", {"card"})
    assert after.calibration is None and after.missing == {"card"}  # a change forgets what was kept
