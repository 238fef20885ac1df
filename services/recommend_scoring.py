"""The recommendation model, with no I/O: a user's profile from their latest interactions, the blend
that scores candidates, MMR diversification, and the reason shown with each item.

score = w_content · cos(item, profile of its kind)
      + w_cooc    · Σ_j w_j · pairs(item, j) / √(pop(item) · pop(j))  /  Σ_j w_j
      + w_pop     · log(1 + pop(item)) / log(1 + max pop)
      − w_dismiss · max(0, max cos(item, a dismissed item))
      + w_fresh   · ½^(age / half-life)                                  (news only)
where j runs over the profile items and w_j = type weight · ½^(position / recency half-life).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from services.interactions import POSITIVE_TYPES, Touch

PAST_TENSE = {"view": "viewed", "click": "clicked", "purchase": "bought", "like": "liked"}


@dataclass(frozen=True)
class Weights:
    """The blend's weights and the profile's shape (from the SIFT_RECOMMEND_* settings)."""

    content: float
    cooccurrence: float
    popularity: float
    dismissed: float
    fresh: float
    fresh_half_life_s: float
    recency_half_life: float
    profile_items: int
    type_weights: Mapping[str, float]


@dataclass(frozen=True)
class Profile:
    """A user's state: weighted positive items (best first), everything seen, what was dismissed."""

    positives: dict[str, float]
    kinds: dict[str, str]
    verbs: dict[str, str]
    seen: frozenset[str]
    dismissed: tuple[str, ...]
    latest_kind: str | None

    @property
    def cold(self) -> bool:
        """True when there is nothing positive to go on."""
        return not self.positives


def build_profile(touches: Sequence[Touch], *, weights: Weights) -> Profile:
    """The profile from the latest interactions (newest first)."""
    scores: dict[str, float] = {}
    kinds: dict[str, str] = {}
    verbs: dict[str, str] = {}
    dismissed: list[str] = []
    position = 0
    for touch in touches:
        kinds.setdefault(touch.item_id, touch.kind)
        if touch.type == "dismiss":
            dismissed.append(touch.item_id)
            continue
        if touch.type not in POSITIVE_TYPES:
            continue
        decay = 0.5 ** (position / weights.recency_half_life)
        scores[touch.item_id] = scores.get(touch.item_id, 0.0) + weights.type_weights.get(touch.type, 1.0) * decay
        if weights.type_weights.get(touch.type, 1.0) >= weights.type_weights.get(verbs.get(touch.item_id, ""), 0.0):
            verbs[touch.item_id] = touch.type
        position += 1
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: weights.profile_items]
    latest = next((t.kind for t in touches if t.type in POSITIVE_TYPES), None)
    return Profile(
        positives=dict(best),
        kinds=kinds,
        verbs=verbs,
        seen=frozenset(t.item_id for t in touches),
        dismissed=tuple(dict.fromkeys(dismissed)),
        latest_kind=latest,
    )


@dataclass(frozen=True)
class Candidate:
    """An item to score: its id, kind, unit vector (None before it is processed) and payload."""

    item_id: str
    kind: str
    vector: np.ndarray | None
    payload: Mapping[str, object]


@dataclass(frozen=True)
class Signals:
    """What the database knows: popularity per item, the largest one, and co-interaction pairs
    (candidate, profile item) → weight."""

    popularity: Mapping[str, float]
    max_popularity: float
    pairs: Mapping[tuple[str, str], float]


@dataclass(frozen=True)
class Scored:
    """A candidate's score and what it is made of."""

    candidate: Candidate
    score: float
    content: float
    cooccurrence: float
    popularity: float
    reason: str


def unit(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """The vector scaled to length 1 (float32)."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def profile_vectors(profile: Profile, vectors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per item kind, the unit weighted mean of the profile items' vectors."""
    sums: dict[str, np.ndarray] = {}
    for item_id, weight in profile.positives.items():
        vector = vectors.get(item_id)
        if vector is not None:
            kind = profile.kinds[item_id]
            sums[kind] = sums.get(kind, np.zeros_like(vector)) + weight * vector
    return {kind: unit(total) for kind, total in sums.items()}


def score_all(
    candidates: Sequence[Candidate],
    *,
    profile: Profile,
    vectors: Mapping[str, np.ndarray],
    signals: Signals,
    weights: Weights,
    now: datetime,
    titles: Mapping[str, str],
) -> list[Scored]:
    """Every candidate scored, best first (ties by item id, so the same state gives the same order)."""
    centres = profile_vectors(profile, vectors)
    dismissed = [vectors[d] for d in profile.dismissed if d in vectors]
    total_weight = sum(profile.positives.values()) or 1.0
    log_max = math.log1p(max(signals.max_popularity, 1.0))
    scored = []
    for c in candidates:
        pop_c = signals.popularity.get(c.item_id, 0.0)
        content = float(c.vector @ centres[c.kind]) if c.vector is not None and c.kind in centres else 0.0
        cooc_by_item = _cooccurrence(c.item_id, pop_c, profile, signals)
        cooc = sum(cooc_by_item.values()) / total_weight
        popularity = math.log1p(pop_c) / log_max
        score = weights.content * content + weights.cooccurrence * cooc + weights.popularity * popularity
        if dismissed and c.vector is not None:
            score -= weights.dismissed * max(0.0, max(float(c.vector @ d) for d in dismissed))
        if c.kind == "news" and weights.fresh:
            score += weights.fresh * freshness(c.payload, now=now, half_life_s=weights.fresh_half_life_s)
        reason = _reason(
            c, profile, vectors, cooc_by_item, titles, weights, content=content, cooc=cooc, popular=pop_c > 0
        )
        scored.append(Scored(c, score, content, cooc, popularity, reason))
    return sorted(scored, key=lambda s: (-s.score, s.candidate.item_id))


def _cooccurrence(item_id: str, pop: float, profile: Profile, signals: Signals) -> dict[str, float]:
    """Per profile item j: w_j · pairs(item, j) / √(pop(item) · pop(j)), a cosine of co-interaction."""
    out = {}
    for j, w in profile.positives.items():
        pair = signals.pairs.get((item_id, j), 0.0)
        if pair:
            out[j] = w * pair / math.sqrt(max(pop, 1.0) * max(signals.popularity.get(j, 1.0), 1.0))
    return out


def freshness(payload: Mapping[str, object], *, now: datetime, half_life_s: float) -> float:
    """½^(age / half-life) from the item's published_at (1 for an item without a date)."""
    published = payload.get("published_at")
    if not isinstance(published, str):
        return 1.0
    try:
        age = (now - datetime.fromisoformat(published)).total_seconds()
    except (TypeError, ValueError):
        return 1.0
    return float(0.5 ** (max(age, 0.0) / half_life_s))


def _reason(
    c: Candidate,
    profile: Profile,
    vectors: Mapping[str, np.ndarray],
    cooc_by_item: Mapping[str, float],
    titles: Mapping[str, str],
    weights: Weights,
    *,
    content: float,
    cooc: float,
    popular: bool,
) -> str:
    if profile.cold or (cooc == 0 and not any(profile.kinds[j] == c.kind for j in profile.positives)):
        return "popular right now" if popular else "new"
    if weights.cooccurrence * cooc > weights.content * content and cooc > 0:
        j = max(cooc_by_item, key=lambda k: (cooc_by_item[k], k))
        return f"people who {PAST_TENSE[profile.verbs[j]]} “{titles.get(j, j)}” also chose this"
    same_kind = [j for j in profile.positives if profile.kinds[j] == c.kind and j in vectors]
    if c.vector is None or not same_kind:
        return "popular with people like you"
    j = max(same_kind, key=lambda k: (profile.positives[k] * float(c.vector @ vectors[k]), k))  # type: ignore[operator]
    return f"because you {PAST_TENSE[profile.verbs[j]]} “{titles.get(j, j)}”"


def diversify(scored: Sequence[Scored], *, limit: int, lam: float) -> list[Scored]:
    """Maximal marginal relevance: each next item trades its score against its similarity to
    those already chosen, so a feed is not ten near-duplicates (lam = 1: by score only)."""
    if lam >= 1.0 or len(scored) <= 1:
        return list(scored[:limit])
    scores = np.array([s.score for s in scored], dtype=np.float64)
    span = float(scores.max() - scores.min()) or 1.0
    relevance = (scores - scores.min()) / span
    dim = next((s.candidate.vector.shape[0] for s in scored if s.candidate.vector is not None), 1)
    matrix = np.stack([s.candidate.vector if s.candidate.vector is not None else np.zeros(dim) for s in scored])
    chosen: list[int] = []
    closest = np.full(len(scored), -np.inf)
    for _ in range(min(limit, len(scored))):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = lam * relevance - (1.0 - lam) * penalty
        value[chosen] = -np.inf
        best = int(np.argmax(value))  # argmax keeps the first of equals: the score order's tie-break
        chosen.append(best)
        closest = np.maximum(closest, matrix @ matrix[best])
    return [scored[i] for i in chosen]
