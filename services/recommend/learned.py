"""The learned recommendation model: EASE (Steck 2019) over the most interacted items, plus
transitions between them, and the served version a process reloads when the registry's active one
changes.

EASE learns an item-item weight matrix B with a zero diagonal from the users x items matrix X in
closed form: B = I - P / diag(P), P = (XᵀX + λI)⁻¹. A user's score for item i is Σ_j x_j · B[j, i]
over the items of their history, x_j weighted by interaction type and recency (dismissals count
negative). EASE ignores order; the transitions T (a sparse Markov chain: T[a, b] = how often b
came within a few items after a) score what people took right after the user's latest items,
and join it with the weight blend.transition fitted on the validation split. The inversion is
dense, so the model keeps the SIFT_RECOMMEND_LEARNED_ITEMS most interacted items: its cost is
O(interactions) to count plus O(N³) for N kept items, whatever the catalogue's size; items
outside it are served by content similarity and popularity in the blend.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sparse
from sqlalchemy import select

from services.db.models import ModelVersion
from services.recommend.interactions import POSITIVE_TYPES, Touch
from services.recommend.scoring import Weights

TASK = "recommend"
TRANSITION_LAGS = 5  # a transition pairs an item with the next 5 positive items of the same user
TRANSITION_ITEMS = 10  # a user's transition score starts from their 10 newest positive items
TRANSITION_HALF_LIFE = 2.0  # ... the newest counting most: ½^(position / 2)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blend:
    """The blend's weights fitted on a tenant's validation split, and how a history is weighted."""

    learned: float
    content: float
    cooccurrence: float
    popularity: float
    recency_half_life: float = 10.0
    recency_floor: float = 0.2
    dismissed: float = 1.0
    transition: float = 0.0  # weight of the transition score inside the learned one

    def as_dict(self) -> dict[str, float]:
        """The weights as stored with the model version."""
        return dict(self.__dict__)


@dataclass
class Ease:
    """An EASE model over `item_ids` (B[j, i]: how much having item j speaks for item i)."""

    item_ids: list[str]
    b: np.ndarray
    blend: Blend
    t: sparse.csr_matrix | None = None  # transitions (fit_transitions); None in versions made before them
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {item: k for k, item in enumerate(self.item_ids)}

    def user_scores(self, touches: Sequence[Touch], *, type_weights: Mapping[str, float]) -> np.ndarray | None:
        """The learned score of every item of the model for a history (newest first): the EASE
        score plus blend.transition times the transition score (parts); None when the history
        holds no item the model knows."""
        ease, transition = self.parts(touches, type_weights=type_weights)
        if transition is None or not self.blend.transition:
            return ease
        return transition * self.blend.transition + (0.0 if ease is None else ease)

    def parts(
        self, touches: Sequence[Touch], *, type_weights: Mapping[str, float]
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(EASE, transition) scores of every item of the model, each divided by its largest
        absolute value, so it lies in [-1, 1] whatever the history's length.
        EASE: Σ_j x_j · B[j], x_j = type weight × (floor + ½^(position / half-life)), −dismissed
        for a dismissed item. Transition: Σ_k ½^(k / TRANSITION_HALF_LIFE) · T[k-th newest positive
        item] over the TRANSITION_ITEMS newest ones: what people took right after the user's last items."""
        x = history_weights(touches, self.index, self.blend, type_weights)
        ease = _scaled(self._row(x) @ self.b) if x else None
        transition = None
        if self.t is not None:
            latest = [t.item_id for t in touches if t.type in POSITIVE_TYPES][:TRANSITION_ITEMS]
            last: dict[int, float] = {}
            for k, item in enumerate(latest):
                if item in self.index:
                    last.setdefault(self.index[item], 0.5 ** (k / TRANSITION_HALF_LIFE))
            transition = _scaled((self._row(last) @ self.t).toarray()) if last else None
        return ease, transition

    def _row(self, x: Mapping[int, float]) -> sparse.csr_matrix:
        """A sparse 1 x N row: multiplying it by B reads B's rows in place (gathering them first,
        B[rows], allocates |history| x N floats per request and cost 5-10 times more here)."""
        rows = np.fromiter(x.keys(), dtype=np.int64)
        weights = np.fromiter(x.values(), dtype=np.float32)
        return sparse.csr_matrix((weights, (np.zeros(len(rows), dtype=np.int64), rows)), shape=(1, len(self.item_ids)))

    def scores(self, full: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        """The items' scores from user_scores (0 for items the model does not know)."""
        out = np.zeros(len(item_ids))
        known = [(k, self.index[i]) for k, i in enumerate(item_ids) if i in self.index]
        if full is not None and known:
            at, cols = zip(*known, strict=True)
            out[np.asarray(at)] = full[np.asarray(cols)]
        return out

    def top(self, full: np.ndarray | None, *, exclude: frozenset[str] | set[str], limit: int) -> list[str]:
        """The model's best `limit` items with a positive score, leaving out `exclude`."""
        if full is None:
            return []
        k = min(len(full), limit + len(exclude))
        best = np.argpartition(-full, k - 1)[:k]
        order = best[np.argsort(-full[best], kind="stable")]
        return [self.item_ids[i] for i in order if self.item_ids[i] not in exclude and full[i] > 0][:limit]

    def save(self, out_dir: Path) -> None:
        """model.npz (B) and learned.json (items and blend) in the version's folder."""
        np.save(out_dir / "ease.npy", self.b.astype(np.float32))
        if self.t is not None:
            sparse.save_npz(out_dir / "transition.npz", self.t)
        (out_dir / "learned.json").write_text(json.dumps({"items": self.item_ids, "blend": self.blend.as_dict()}))

    @classmethod
    def load(cls, path: Path) -> Ease:
        """The model saved in a version's folder (B memory-mapped: processes share its pages)."""
        meta = json.loads((path / "learned.json").read_text())
        t = sparse.load_npz(path / "transition.npz").tocsr() if (path / "transition.npz").exists() else None
        return cls(meta["items"], np.load(path / "ease.npy", mmap_mode="r"), Blend(**meta["blend"]), t)


def history_weights(
    touches: Sequence[Touch], index: Mapping[str, int], blend: Blend, type_weights: Mapping[str, float]
) -> dict[int, float]:
    """{column: weight} of a history's items that the model knows; a dismissal sets its item negative."""
    x: dict[int, float] = {}
    position = 0
    for touch in touches:
        column = index.get(touch.item_id)
        if touch.type == "dismiss":
            if column is not None:
                x[column] = -blend.dismissed
            continue
        if touch.type not in POSITIVE_TYPES:
            continue
        decay = blend.recency_floor + 0.5 ** (position / blend.recency_half_life)
        position += 1
        if column is not None and x.get(column, 0.0) >= 0:
            x[column] = x.get(column, 0.0) + type_weights.get(touch.type, 1.0) * decay
    return x


def _scaled(scores: np.ndarray) -> np.ndarray:
    full = np.asarray(scores).ravel()
    scale = float(np.abs(full).max())
    return full / scale if scale > 0 else full


def positive_sequences(histories: Mapping[str, Sequence[Touch]]) -> list[list[str]]:
    """Each user's distinct positive items, oldest first, without the items they dismissed."""
    out = []
    for touches in histories.values():
        dismissed = {t.item_id for t in touches if t.type == "dismiss"}
        seq = [t.item_id for t in reversed(touches) if t.type in POSITIVE_TYPES and t.item_id not in dismissed]
        out.append(list(dict.fromkeys(seq)))
    return out


def fit_transitions(sequences: Sequence[Sequence[str]], index: Mapping[str, int]) -> sparse.csr_matrix:
    """T[a, b] = Σ over users of ½^((lag − 1) / 2) when b came `lag` ≤ TRANSITION_LAGS positive
    items after a, divided by a's number of users: how likely b follows a soon (a Markov chain
    over the model's items). O(interactions × TRANSITION_LAGS) to build, sparse."""
    n = len(index)
    rows, cols, values = [], [], []
    users = np.zeros(n)
    for sequence in sequences:
        seq = np.fromiter((index[i] for i in sequence if i in index), dtype=np.int64)
        users[seq] += 1
        for lag in range(1, min(TRANSITION_LAGS, len(seq) - 1) + 1):
            rows.append(seq[:-lag])
            cols.append(seq[lag:])
            values.append(np.full(len(seq) - lag, 0.5 ** ((lag - 1) / 2)))
    if not rows:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    t = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return (sparse.diags(1.0 / np.maximum(users, 1.0)) @ t).tocsr().astype(np.float32)


def fit_ease(users: Sequence[Sequence[tuple[str, float]]], *, max_items: int, l2: float, blend: Blend) -> Ease:
    """EASE on the `max_items` items with the most users, from each user's (item, weight) list."""
    counts: dict[str, int] = {}
    for history in users:
        for item, _ in history:
            counts[item] = counts.get(item, 0) + 1
    kept = sorted(counts, key=lambda i: (-counts[i], i))[:max_items]
    index = {item: k for k, item in enumerate(kept)}
    rows, cols, values = [], [], []
    for u, history in enumerate(users):
        for item, weight in history:
            if item in index:
                rows.append(u)
                cols.append(index[item])
                values.append(weight)
    x = sparse.csr_matrix((values, (rows, cols)), shape=(len(users), len(kept)), dtype=np.float64)
    x.sum_duplicates()
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    return Ease(kept, b.astype(np.float32), blend)


class ServedModel:
    """The tenant's active recommend version, re-read at most every SIFT_MODEL_RELOAD_S (so every
    process picks up a promotion or a rollback without a restart); None before the first one."""

    def __init__(self, *, sessions: Callable[[], Any], reload_s: float) -> None:
        self._sessions = sessions
        self._reload_s = reload_s
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._loaded: tuple[str, Ease] | None = None

    def get(self) -> tuple[str, Ease] | None:
        """(version, model) of the active version."""
        if time.monotonic() - self._checked >= self._reload_s:
            with self._lock:
                if time.monotonic() - self._checked >= self._reload_s:
                    self._reload()
        return self._loaded

    def expire(self) -> None:
        """Re-read the registry on the next call (after a promotion in this process)."""
        self._checked = -float("inf")

    def _reload(self) -> None:
        with self._sessions() as session:
            row = session.execute(
                select(ModelVersion.version, ModelVersion.artifact_path).where(
                    ModelVersion.task == TASK, ModelVersion.status == "active"
                )
            ).first()
        self._checked = time.monotonic()
        if row is None:
            self._loaded = None
        elif self._loaded is None or self._loaded[0] != row.version:
            try:
                self._loaded = (row.version, Ease.load(Path(row.artifact_path)))
            except (OSError, ValueError, KeyError):  # feeds go on with the hand-set blend; the next check retries
                log.exception("recommend model %s could not be loaded from %s", row.version, row.artifact_path)
                self._loaded = None
                return
            log.info("recommend model %s loaded", row.version)


def served_blend(
    served: tuple[str, Ease] | None, weights: Weights, touches: Sequence[Touch]
) -> tuple[Ease | None, Weights, np.ndarray | None]:
    """The served model, the blend weights stored with it (the settings' without one) and the
    model's scores for the user's history."""
    if served is None:
        return None, weights, None
    model = served[1]
    b = model.blend
    fitted = replace(
        weights, content=b.content, cooccurrence=b.cooccurrence, popularity=b.popularity, learned=b.learned
    )
    return model, fitted, model.user_scores(touches, type_weights=weights.type_weights)
