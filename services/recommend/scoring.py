"""The recommendation model, with no I/O: a user's profile from their latest interactions, the blend
that scores candidates, MMR diversification, and the reason shown with each item.

score = w_content · cos(item, profile of its kind)
      + w_cooc    · Σ_j w_j · pairs(item, j) / √(pop(item) · pop(j))  /  Σ_j w_j
      + w_pop     · log(1 + pop(item)) / log(1 + max pop)
      − w_dismiss · max(0, max cos(item, a dismissed item))
      + w_fresh   · ½^(age / half-life)                                  (news only)
      + w_learned · the learned model's score (services/recommend/learned.py), once one is trained
where j runs over the profile items and w_j = type weight · ½^(position / recency half-life).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from services.config import Settings
from services.recommend.interactions import POSITIVE_TYPES, Touch

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
    learned: float = 0.0


def weights_from(settings: Settings) -> Weights:
    """The blend's weights from the SIFT_RECOMMEND_* settings."""
    s = settings
    return Weights(
        content=s.recommend_weight_content,
        cooccurrence=s.recommend_weight_cooccurrence,
        popularity=s.recommend_weight_popularity,
        dismissed=s.recommend_weight_dismissed,
        fresh=s.recommend_fresh_weight,
        fresh_half_life_s=s.recommend_fresh_half_life_s,
        recency_half_life=s.recommend_recency_half_life,
        profile_items=s.recommend_profile_items,
        type_weights=dict(s.recommend_type_weights),
    )


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
    learned: float = 0.0


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
    learned: np.ndarray | None = None,
) -> list[Scored]:
    """Every candidate scored, best first (ties by item id, so the same state gives the same order);
    `learned` is the learned model's score of each candidate, if one is served. Reasons are left
    empty: `explain` writes them for the items that are shown."""
    if not candidates:
        return []
    n = len(candidates)
    matrix = _matrix(candidates)
    content = np.zeros(n)
    for kind, centre in profile_vectors(profile, vectors).items():
        mask = np.array([c.kind == kind and c.vector is not None for c in candidates])
        content[mask] = matrix[mask] @ centre
    pop = np.array([signals.popularity.get(c.item_id, 0.0) for c in candidates])
    cooc = _cooccurrence_column(candidates, pop, profile, signals)
    popularity = np.log1p(pop) / math.log1p(max(signals.max_popularity, 1.0))
    score = weights.content * content + weights.cooccurrence * cooc + weights.popularity * popularity
    learned = np.zeros(n) if learned is None else learned
    score += weights.learned * learned
    dismissed = [vectors[d] for d in profile.dismissed if d in vectors]
    if dismissed:
        score -= weights.dismissed * np.clip((matrix @ np.stack(dismissed).T).max(axis=1), 0.0, None)
    if weights.fresh:
        for k, c in enumerate(candidates):
            if c.kind == "news":
                score[k] += weights.fresh * freshness(c.payload, now=now, half_life_s=weights.fresh_half_life_s)
    order = sorted(range(n), key=lambda k: (-score[k], candidates[k].item_id))
    return [
        Scored(
            candidates[k],
            float(score[k]),
            float(content[k]),
            float(cooc[k]),
            float(popularity[k]),
            "",
            float(learned[k]),
        )
        for k in order
    ]


def _matrix(candidates: Sequence[Candidate]) -> np.ndarray:
    """The candidates' vectors as rows (zeros for one not processed yet)."""
    dim = next((c.vector.shape[0] for c in candidates if c.vector is not None), 1)
    zeros = np.zeros(dim, dtype=np.float32)
    return np.stack([c.vector if c.vector is not None else zeros for c in candidates])


def _cooccurrence_column(
    candidates: Sequence[Candidate], pop: np.ndarray, profile: Profile, signals: Signals
) -> np.ndarray:
    """Σ_j w_j · pairs(i, j) / √(pop(i) · pop(j)) / Σ_j w_j for every candidate i."""
    index = {c.item_id: k for k, c in enumerate(candidates)}
    column = np.zeros(len(candidates))
    for (item, j), pair in signals.pairs.items():
        k, w = index.get(item), profile.positives.get(j)
        if k is not None and w:
            column[k] += w * pair / math.sqrt(max(pop[k], 1.0) * max(signals.popularity.get(j, 1.0), 1.0))
    return column / (sum(profile.positives.values()) or 1.0)


def explain(
    scored: Sequence[Scored],
    *,
    profile: Profile,
    vectors: Mapping[str, np.ndarray],
    signals: Signals,
    weights: Weights,
    titles: Mapping[str, str],
) -> list[Scored]:
    """The items with their reason: the profile item that brought each most, or why there is none."""
    return [replace(s, reason=_reason(s, profile, vectors, signals, weights, titles)) for s in scored]


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
    s: Scored,
    profile: Profile,
    vectors: Mapping[str, np.ndarray],
    signals: Signals,
    weights: Weights,
    titles: Mapping[str, str],
) -> str:
    c = s.candidate
    if profile.cold or (s.cooccurrence == 0 and not any(profile.kinds[j] == c.kind for j in profile.positives)):
        return "popular right now" if signals.popularity.get(c.item_id) else "new"
    if weights.cooccurrence * s.cooccurrence > weights.content * s.content and s.cooccurrence > 0:
        pairs = {j: w * signals.pairs.get((c.item_id, j), 0.0) for j, w in profile.positives.items()}
        j = max(pairs, key=lambda k: (pairs[k], k))
        return f"people who {PAST_TENSE[profile.verbs[j]]} “{titles.get(j, j)}” also chose this"
    vector = c.vector
    same_kind = [j for j in profile.positives if profile.kinds[j] == c.kind and j in vectors]
    if vector is None or not same_kind:
        return "popular with people like you"
    j = max(same_kind, key=lambda k: (profile.positives[k] * float(vector @ vectors[k]), k))
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
