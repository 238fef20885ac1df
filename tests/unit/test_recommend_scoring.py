"""The recommendation model without I/O: profiles, the blend, diversification, freshness, filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.errors import InvalidInput
from services.recommend.filters import item_filters
from services.recommend.interactions import Touch
from services.recommend.scoring import (
    Candidate,
    Scored,
    Signals,
    Weights,
    build_profile,
    diversify,
    explain,
    freshness,
    score_all,
    unit,
)

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
WEIGHTS = Weights(
    content=1.0,
    cooccurrence=10.0,
    popularity=0.3,
    dismissed=0.6,
    fresh=0.2,
    fresh_half_life_s=86_400.0,
    recency_half_life=5.0,
    profile_items=3,
    type_weights={"view": 1.0, "click": 1.5, "like": 2.5, "purchase": 3.0},
)


def touch(item: str, kind: str = "view", minutes_ago: int = 0) -> Touch:
    return Touch(item, "product", kind, NOW - timedelta(minutes=minutes_ago))


def test_a_profile_weighs_type_and_recency_and_keeps_the_best_items() -> None:
    touches = [touch("a"), touch("b", "purchase", 1), touch("x", "dismiss", 2), touch("c", "view", 3)]
    touches += [touch(f"old{n}", "view", 10 + n) for n in range(5)]
    profile = build_profile(touches, weights=WEIGHTS)
    assert list(profile.positives) == ["b", "a", "c"]  # purchase beats a newer view; only 3 kept
    assert profile.positives["a"] == 1.0 and profile.positives["b"] == pytest.approx(3.0 * 0.5 ** (1 / 5))
    assert profile.dismissed == ("x",) and "x" in profile.seen and "old4" in profile.seen
    assert profile.verbs["b"] == "purchase" and profile.latest_kind == "product" and not profile.cold
    assert build_profile([touch("x", "dismiss")], weights=WEIGHTS).cold


def candidate(item: str, vector: list[float], kind: str = "product", **payload: object) -> Candidate:
    return Candidate(item, kind, unit(vector), payload)


def test_the_blend_uses_content_co_interactions_popularity_and_dismissals() -> None:
    profile = build_profile([touch("h", "like"), touch("d", "dismiss", 1)], weights=WEIGHTS)
    vectors = {"h": unit([1, 0, 0]), "d": unit([0, 0, 1])}
    near, paired, popular, like_dismissed = (
        candidate("near", [1, 0.1, 0]),
        candidate("paired", [0, 1, 0]),
        candidate("popular", [0, 1, 0]),
        candidate("like_dismissed", [0.5, 0, 1]),
    )
    signals = Signals(popularity={"h": 4, "paired": 4, "popular": 50}, max_popularity=50, pairs={("paired", "h"): 2})
    ranked = score_all(
        [near, paired, popular, like_dismissed],
        profile=profile,
        vectors=vectors,
        signals=signals,
        weights=WEIGHTS,
        now=NOW,
    )
    assert all(s.reason == "" for s in ranked)  # reasons are written for the items shown only
    scored = explain(
        ranked, profile=profile, vectors=vectors, signals=signals, weights=WEIGHTS, titles={"h": "Hiking boots"}
    )
    by_id = {s.candidate.item_id: s for s in scored}
    assert by_id["paired"].cooccurrence == pytest.approx(2 / 4)  # w·pairs/√(pop·pop) / Σw
    assert by_id["paired"].reason == "people who liked “Hiking boots” also chose this"
    assert by_id["near"].reason == "because you liked “Hiking boots”"
    assert by_id["popular"].score > 0 and by_id["popular"].popularity == pytest.approx(1.0)
    assert by_id["like_dismissed"].score < by_id["like_dismissed"].content  # pulled down by the dismissal
    assert [s.candidate.item_id for s in scored][:2] == ["paired", "near"]


def test_news_freshness_halves_with_age_and_cold_reasons_say_why() -> None:
    assert freshness({"published_at": (NOW - timedelta(days=1)).isoformat()}, now=NOW, half_life_s=86_400) == 0.5
    assert freshness({}, now=NOW, half_life_s=86_400) == 1.0
    cold = build_profile([], weights=WEIGHTS)
    old = candidate("old", [1, 0], kind="news", published_at=(NOW - timedelta(days=3)).isoformat())
    new = candidate("new", [1, 0], kind="news", published_at=NOW.isoformat())
    signals = Signals(popularity={"old": 1}, max_popularity=1, pairs={})
    ranked = score_all([old, new], profile=cold, vectors={}, signals=signals, weights=WEIGHTS, now=NOW)
    scored = explain(ranked, profile=cold, vectors={}, signals=signals, weights=WEIGHTS, titles={})
    assert {s.candidate.item_id: s.reason for s in scored} == {"old": "popular right now", "new": "new"}


def scored(item: str, score: float, vector: list[float]) -> Scored:
    return Scored(candidate(item, vector), score, 0.0, 0.0, 0.0, "")


def test_diversify_skips_near_duplicates_and_keeps_order_without_them() -> None:
    items = [scored("a", 1.0, [1, 0]), scored("a2", 0.99, [1, 0.01]), scored("b", 0.9, [0, 1])]
    items.append(scored("low", 0.0, [-1, 0]))  # the pool's spread: relevance is normalised over it
    assert [s.candidate.item_id for s in diversify(items, limit=2, lam=0.7)] == ["a", "b"]
    assert [s.candidate.item_id for s in diversify(items, limit=2, lam=1.0)] == ["a", "a2"]
    assert diversify(items[:1], limit=5, lam=0.5) == items[:1]


def test_item_filters_build_ranges_and_refuse_what_cannot_be_filtered() -> None:
    built = item_filters(
        category=["shoes"],
        in_stock=True,
        min_price=10,
        max_price=50.5,
        published_after=datetime(2026, 1, 1),
        meta=["brand:acme", "brand:zenith", "stars:4"],
        declared={"brand": "keyword", "stars": "integer"},
    )
    assert built == {
        "metadata.category": ["shoes"],
        "metadata.in_stock": True,
        "metadata.price": {"gte": 10, "lte": 50.5},
        "published_at": {"gte": "2026-01-01T00:00:00+00:00"},
        "metadata.brand": ["acme", "zenith"],
        "metadata.stars": [4],
    }
    for bad, words in [
        ({"meta": ["colour:red"]}, "not filterable"),
        ({"meta": ["stars:many"]}, "integer"),
        ({"meta": ["brand"]}, "key:value"),
        ({"min_price": 5, "max_price": 1}, "min_price"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            item_filters(**bad, declared={"brand": "keyword", "stars": "integer"})  # type: ignore[arg-type]
    assert np.isclose(float(np.linalg.norm(unit([3, 4]))), 1.0)
