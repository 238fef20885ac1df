"""The learned model's transition part: what people took right after a user's latest items."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from services.recommend import evaluation as ev
from services.recommend.interactions import Touch
from services.recommend.learned import Blend, Ease, fit_ease, fit_transitions, positive_sequences

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = {"view": 1.0}


def _touches(items: list[str], kind: str = "view") -> list[Touch]:
    """A history, newest first, from items in the order they were taken."""
    return [Touch(item, "product", kind, T0 + timedelta(minutes=n)) for n, item in enumerate(items)][::-1]


def _model(transition: float) -> Ease:
    # Everyone takes a, b, c, d in one of two orders: the item sets are the same, the order tells what comes next.
    orders = [["a", "b", "c", "d"], ["c", "d", "a", "b"]] * 10
    histories = {f"u{n}": _touches(order) for n, order in enumerate(orders)}
    blend = Blend(learned=1.0, content=1.0, cooccurrence=0.0, popularity=0.0, transition=transition)
    model = fit_ease(ev.positives_by_user(histories, TYPES), max_items=10, l2=1.0, blend=blend)
    model.t = fit_transitions(positive_sequences(histories), model.index)
    return model


def test_transitions_score_what_came_right_after_the_latest_items() -> None:
    model = _model(transition=1.0)
    ease, transition = model.parts(_touches(["a"]), type_weights=TYPES)
    assert ease is not None and transition is not None
    scores = dict(zip(model.item_ids, transition, strict=True))
    assert scores["b"] == 1.0 and scores["b"] > scores["c"] > 0 and scores["a"] == 0.0  # b always follows a
    ease_scores = dict(zip(model.item_ids, ease, strict=True))
    assert ease_scores["b"] == ease_scores["c"] == ease_scores["d"]  # order-free: EASE cannot tell them apart
    combined = model.user_scores(_touches(["a"]), type_weights=TYPES)
    assert combined is not None and np.allclose(combined, ease + transition)


def test_the_latest_item_counts_most_and_dismissals_are_not_transitions() -> None:
    model = _model(transition=1.0)
    _, after_c = model.parts(_touches(["a", "c"]), type_weights=TYPES)  # c is the latest: d comes next
    assert after_c is not None
    scores = dict(zip(model.item_ids, after_c, strict=True))
    assert scores["d"] > scores["b"]
    dismissed = [*_touches(["c"], kind="dismiss"), *_touches(["a"])]
    _, after_a = model.parts(dismissed, type_weights=TYPES)
    assert after_a is not None and dict(zip(model.item_ids, after_a, strict=True))["b"] == 1.0


def test_without_the_transition_weight_the_learned_score_is_ease_alone() -> None:
    model = _model(transition=0.0)
    ease, _ = model.parts(_touches(["a"]), type_weights=TYPES)
    combined = model.user_scores(_touches(["a"]), type_weights=TYPES)
    assert ease is not None and combined is not None and np.array_equal(combined, ease)


def test_transitions_are_saved_and_a_version_without_them_still_loads(tmp_path: Path) -> None:
    model = _model(transition=0.5)
    model.save(tmp_path)
    loaded = Ease.load(tmp_path)
    assert loaded.t is not None and (loaded.t != model.t).nnz == 0 and loaded.blend.transition == 0.5
    (tmp_path / "transition.npz").unlink()  # a version trained before transitions existed
    older = Ease.load(tmp_path)
    assert older.t is None
    _, transition = older.parts(_touches(["a"]), type_weights=TYPES)
    assert transition is None and older.user_scores(_touches(["a"]), type_weights=TYPES) is not None


def test_the_blend_fit_picks_the_transition_weight_when_order_is_the_signal() -> None:
    rng = np.random.default_rng(0)
    users, n = 200, 100
    noise = rng.random((users, n))
    transition = rng.random((users, n)) * 0.5
    transition[:, 0] = 1.0  # the held-out item (column 0) is always what came next
    parts = {
        "learned:new": noise,
        "transition:new": transition,
        "content": rng.random((users, n)) * 0.1,
        "cooccurrence": rng.random((users, n)),
        "popularity": rng.random((users, n)),
    }
    base = Blend(learned=1.0, content=0.0, cooccurrence=0.0, popularity=0.0)
    fitted, metrics = ev.fit_blend(parts, learned="new", base=base)
    assert fitted.transition > 0 and fitted.learned > 0 and metrics["hr@10"] == 1.0
