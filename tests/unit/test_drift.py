"""The drift measures on their own: Jensen-Shannon divergence, embedding distance, the score."""

from __future__ import annotations

import numpy as np
import pytest

from services.alerts.drift import TaskDrift, combined, embedding_distance, js_divergence


def test_js_divergence_is_zero_for_the_same_shares_and_one_for_disjoint_labels() -> None:
    assert js_divergence({"a": 2, "b": 6}, {"a": 1, "b": 3}) == pytest.approx(0.0)
    assert js_divergence({"a": 5}, {"b": 5}) == pytest.approx(1.0)
    middle = js_divergence({"a": 1, "b": 1}, {"a": 1})
    assert 0.0 < middle < 1.0
    assert js_divergence({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(middle)  # symmetric


def test_js_divergence_needs_mass_on_both_sides() -> None:
    with pytest.raises(ValueError):
        js_divergence({}, {"a": 1})


def test_embedding_distance_of_mean_vectors() -> None:
    a = np.array([1.0, 0.0])
    assert embedding_distance(a, 3 * a) == pytest.approx(0.0)
    assert embedding_distance(a, np.array([0.0, 2.0])) == pytest.approx(1.0)
    assert embedding_distance(a, -a) == 1.0  # clamped: opposite means are as far as it goes
    with pytest.raises(ValueError):
        embedding_distance(a, np.zeros(2))


def test_the_score_is_the_mean_of_what_was_measured() -> None:
    assert combined(0.2, 0.6) == pytest.approx(0.4)
    assert combined(None, 0.6) == pytest.approx(0.6)
    assert combined(0.2, None) == pytest.approx(0.2)
    assert combined(None, None) is None


def test_drifting_means_at_or_above_the_threshold() -> None:
    base = {
        "task": "intent",
        "kind": "ticket",
        "reference": "first events",
        "recent_events": 50,
        "reference_events": 50,
        "label_divergence": None,
        "embedding_distance": None,
        "threshold": 0.2,
        "recent_labels": {},
        "reference_labels": {},
    }
    assert TaskDrift(score=0.2, **base).drifting  # type: ignore[arg-type]
    assert not TaskDrift(score=0.19, **base).drifting  # type: ignore[arg-type]
    assert not TaskDrift(score=None, **base).drifting  # type: ignore[arg-type]
