"""Offline evaluation of the recommendation blend on a tenant's own interactions, with no I/O.

Leave-last-out: each user's newest positive item is held out and ranked among `negatives` items
the user never touched, drawn with a fixed seed. Every candidate is scored with the serving code
(services/recommend/scoring.py) on signals rebuilt from the interactions before the held-out
one (popularity, co-interaction pairs within the pair window), so a weight fitted here is the
weight the feed uses. The components are kept per candidate, so any blend is scored at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sparse

from services.recommend.interactions import POSITIVE_TYPES, Touch
from services.recommend.learned import Blend, Ease
from services.recommend.scoring import Candidate, Signals, Weights, build_profile, score_all

Histories = dict[str, list[Touch]]  # newest first
COMPONENTS = ("learned", "content", "cooccurrence", "popularity")
# The grid of the blend's weights. Content stays at 1: it sets the scale, and it is what serves
# an item nobody has interacted with yet, which a validation split of past interactions cannot value.
GRID = {
    "learned": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "transition": (0.0, 0.25, 0.5, 1.0, 2.0),  # inside the learned score: learned × (EASE + transition × T)
    "content": (1.0,),
    "cooccurrence": (0.0, 1.0, 3.0, 10.0, 30.0),
    "popularity": (0.0, 0.1, 0.3, 1.0),
}


@dataclass(frozen=True)
class Split:
    """Histories before each user's held-out item, and that item."""

    before: Histories
    target: dict[str, str]


def hold_out_last(histories: Histories, *, min_items: int = 3) -> Split:
    """Per user with at least min_items distinct positive items: the newest positive item held out,
    the history before it kept (without any other touch of that item)."""
    before: Histories = {}
    target: dict[str, str] = {}
    for user, touches in histories.items():
        positives = list(dict.fromkeys(t.item_id for t in touches if t.type in POSITIVE_TYPES))
        if len(positives) < min_items:
            before[user] = list(touches)
            continue
        item = positives[0]
        at = next(k for k, t in enumerate(touches) if t.item_id == item and t.type in POSITIVE_TYPES)
        before[user] = [t for t in touches[at + 1 :] if t.item_id != item]
        target[user] = item
    return Split(before, target)


def positives_by_user(histories: Histories, type_weights: Mapping[str, float]) -> list[list[tuple[str, float]]]:
    """The training rows of the learned model: each user's positive items, weighted by the best type
    they took (dismissed items left out: the model learns what goes together)."""
    rows = []
    for touches in histories.values():
        best: dict[str, float] = {}
        dismissed = {t.item_id for t in touches if t.type == "dismiss"}
        for t in touches:
            if t.type in POSITIVE_TYPES and t.item_id not in dismissed:
                best[t.item_id] = max(best.get(t.item_id, 0.0), type_weights.get(t.type, 1.0))
        if best:
            rows.append(list(best.items()))
    return rows


def candidates(split: Split, items: Sequence[str], *, negatives: int, users: int, seed: int) -> dict[str, list[str]]:
    """Per evaluated user (at most `users`, drawn with the seed): the held-out item, then `negatives`
    items the user never touched (a user who touched nearly the whole catalogue is left out)."""
    rng = np.random.default_rng(seed)
    chosen = sorted(split.target)
    if len(chosen) > users:
        chosen = sorted(rng.choice(chosen, size=users, replace=False).tolist())
    out = {}
    for user in chosen:
        touched = {t.item_id for t in split.before[user]} | {split.target[user]}
        pool = rng.choice(len(items), size=min(len(items), 3 * negatives + 10), replace=False)
        picked = [items[k] for k in pool if items[k] not in touched][:negatives]
        if len(picked) == negatives:
            out[user] = [split.target[user], *picked]
    return out


def pair_matrix(histories: Histories, index: Mapping[str, int], *, window: int) -> sparse.csr_matrix:
    """Co-interaction counts as the write path keeps them: each positive item with the user's
    `window` latest distinct items before it, both ways."""
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    for touches in histories.values():
        seq = np.array(
            list(dict.fromkeys(index[t.item_id] for t in reversed(touches) if t.type in POSITIVE_TYPES)),
            dtype=np.int64,
        )
        for lag in range(1, min(window, len(seq) - 1) + 1):
            left += [seq[lag:], seq[:-lag]]
            right += [seq[:-lag], seq[lag:]]
    n = len(index)
    if not left:
        return sparse.csr_matrix((n, n))
    a, b = np.concatenate(left), np.concatenate(right)
    return sparse.csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n))  # duplicates add up


def components(
    split: Split,
    lists: Mapping[str, Sequence[str]],
    *,
    vectors: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    weights: Weights,
    models: Mapping[str, Ease | None],
    window: int,
) -> dict[str, np.ndarray]:
    """Per component (and per learned model), a users x candidates array of its scores."""
    ids = sorted({i for ids in lists.values() for i in ids} | {t.item_id for h in split.before.values() for t in h})
    index = {item: k for k, item in enumerate(ids)}
    pop = np.zeros(len(ids))
    for touches in split.before.values():
        for item in {t.item_id for t in touches if t.type in POSITIVE_TYPES}:
            pop[index[item]] += 1
    pairs = pair_matrix(split.before, index, window=window)
    out: dict[str, list[np.ndarray]] = {name: [] for name in COMPONENTS[1:]}
    out.update({f"{part}:{name}": [] for name in models for part in ("learned", "transition")})
    now = datetime.now(UTC)
    for user, items in lists.items():
        touches = split.before[user]
        profile = build_profile(touches, weights=weights)
        cand = [Candidate(i, kinds.get(i, "product"), vectors.get(i), {}) for i in items]
        block = pairs[[index[i] for i in items]][:, [index[j] for j in profile.positives]].toarray()
        near = {
            (i, j): float(block[a, b])
            for (a, i), (b, j) in itertools.product(enumerate(items), enumerate(profile.positives))
            if block[a, b]
        }
        signals = Signals({i: float(pop[index[i]]) for i in [*items, *profile.positives]}, float(pop.max()), near)
        by_id = {
            s.candidate.item_id: s
            for s in score_all(cand, profile=profile, vectors=vectors, signals=signals, weights=weights, now=now)
        }
        for name in COMPONENTS[1:]:
            out[name].append(np.array([getattr(by_id[i], name) for i in items]))
        for name, model in models.items():
            ease, transition = model.parts(touches, type_weights=weights.type_weights) if model else (None, None)
            out[f"learned:{name}"].append(model.scores(ease, items) if model else np.zeros(len(items)))
            out[f"transition:{name}"].append(model.scores(transition, items) if model else np.zeros(len(items)))
    return {name: np.stack(rows) for name, rows in out.items()}


def ranking_metrics(scores: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """HR@10 and NDCG@10 when column 0 holds the held-out item (ties in a fixed random order)."""
    rng = np.random.default_rng(seed + 1)
    jitter = rng.random(scores.shape) * 1e-9
    values = scores + jitter
    rank = (values[:, 1:] > values[:, :1]).sum(axis=1)
    hits = rank < 10
    gains = np.where(hits, 1.0 / np.log2(rank + 2.0), 0.0)
    return {"hr@10": round(float(hits.mean()), 4), "ndcg@10": round(float(gains.mean()), 4), "users": len(rank)}


def blended(parts: Mapping[str, np.ndarray], weights: Mapping[str, float], learned: str) -> np.ndarray:
    """The blend's scores: Σ weight · component, the learned component (EASE + transition ×
    transitions) from the named model."""
    model = parts[f"learned:{learned}"] + weights.get("transition", 0.0) * parts[f"transition:{learned}"]
    total = weights.get("learned", 0.0) * model
    for name in COMPONENTS[1:]:
        total = total + weights.get(name, 0.0) * parts[name]
    return total


def fit_blend(parts: Mapping[str, np.ndarray], *, learned: str, base: Blend) -> tuple[Blend, dict[str, float]]:
    """The grid's weights with the best NDCG@10 (then HR@10) on a validation split."""
    best: tuple[tuple[float, float], dict[str, float], dict[str, float]] | None = None
    for values in itertools.product(*GRID.values()):
        weights = dict(zip(GRID, values, strict=True))
        if not any(weights.values()):
            continue
        m = ranking_metrics(blended(parts, weights, learned))
        key = (m["ndcg@10"], m["hr@10"])
        if best is None or key > best[0]:
            best = (key, weights, m)
    assert best is not None
    w = best[1]
    fitted = Blend(
        learned=w["learned"],
        transition=w["transition"],
        content=w["content"],
        cooccurrence=w["cooccurrence"],
        popularity=w["popularity"],
        recency_half_life=base.recency_half_life,
        recency_floor=base.recency_floor,
        dismissed=base.dismissed,
    )
    return fitted, best[2]
