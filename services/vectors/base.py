"""The VectorStore port. Adapters: qdrant_edge (embedded, in-process) and qdrant_server
(qdrant-client). Both pass tests/integration/test_vector_store_contract.py."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from services.errors import InvalidInput

# A filter maps payload keys (dotted for nested ones) to conditions, and every key must hold:
#   "value"                    exact match on a str, int or bool (a float cannot be matched exactly)
#   ["v1", "v2"]               any of these values; [] matches nothing
#   {"gte": 1, "lt": 9.5}      a range of numbers (int or float, not bool; int and float payloads both match)
#   {"gt": "2026-01-01T00:00:00+00:00"}   a range of ISO-8601 datetimes (no offset means UTC)
# A range takes any of gte, gt, lte and lt, all numbers or all datetimes; anything else is InvalidInput.
# Enough for the services' business filters; adapters translate it.
Filters = Mapping[str, Any]

RANGE_KEYS = ("gte", "gt", "lte", "lt")
RECOMMEND_STRATEGIES = ("average_vector", "best_score")
Examples = Sequence[Sequence[float]] | np.ndarray  # recommendation examples: vectors, or one row each


@dataclass(frozen=True)
class VectorPoint:
    """A point to upsert: its id is the event's point UUID, so a retry overwrites itself."""

    id: str
    vector: Sequence[float]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A point found by a search or retrieved by id."""

    id: str
    score: float
    payload: dict[str, Any]
    vector: list[float] | None = None


@dataclass(frozen=True)
class PayloadIndex:
    """A payload field the services filter on: kind is keyword, integer, float, bool or datetime."""

    field: str
    kind: str


class VectorStore(Protocol):
    """What the domain needs from a vector database."""

    def ensure_collection(self, name: str, *, dimension: int, indexes: Sequence[PayloadIndex]) -> None:
        """Create the collection and its payload indexes when missing (idempotent)."""

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        """Insert or overwrite points, in one call, durable when it returns."""

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Remove points; unknown ids are ignored."""

    def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        filters: Filters | None = None,
        exclude_ids: Sequence[str] = (),
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        """Nearest points by cosine similarity, best first, honouring filters and leaving out exclude_ids
        (with_payload=False: ids and scores only, the hits' payloads empty)."""

    def search_batch(
        self, name: str, vectors: Examples, *, limit: int, filters: Sequence[Filters | None] | None = None
    ) -> list[list[Hit]]:
        """search for each vector (with its own filters, when given) in one call: one list of hits
        per vector, in order, with payloads; the same hits as one search each."""

    def recommend(
        self,
        name: str,
        *,
        positive: Examples,
        negative: Examples = (),
        limit: int,
        filters: Filters | None = None,
        exclude_ids: Sequence[str] = (),
        strategy: str = "average_vector",
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        """Points like the positive examples and unlike the negative ones (Qdrant's recommendation query)."""

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        """Points by id (score 1.0); unknown ids are left out."""

    def count(self, name: str, *, filters: Filters | None = None) -> int:
        """Exact number of points (matching filters)."""

    def build_indexes(self, *, min_unindexed: int) -> dict[str, int]:
        """Build the vector index of every open collection with at least min_unindexed points
        outside it; returns those collections and their unindexed counts (a server indexes by itself)."""

    def warm(self, name: str) -> int:
        """Read the collection's files into the operating system's page cache before the first
        queries need them; returns the bytes read (0 for a server, which keeps its own)."""

    def ping(self) -> None:
        """Raise VectorStoreUnavailable unless the store answers."""

    def close(self) -> None:
        """Flush and release resources."""


def batch_queries(
    vectors: Examples, filters: Sequence[Filters | None] | None
) -> list[tuple[list[float], Filters | None]]:
    """A batch search's (vector, filters) pairs; filters, when given, must have one entry per vector."""
    rows = vectors.tolist() if isinstance(vectors, np.ndarray) else [[float(x) for x in v] for v in vectors]
    if filters is None:
        return [(row, None) for row in rows]
    if len(filters) != len(rows):
        raise InvalidInput(f"a batch search got {len(rows)} vectors and {len(filters)} filters; give one per vector")
    return list(zip(rows, filters, strict=True))


def plain_vector(vector: Any) -> list[float] | None:
    """A stored vector as a list of floats; of named vectors, Sift uses only the default one ("")."""
    if isinstance(vector, dict):
        vector = vector.get("")
    if vector is None:
        return None
    # Both engines hand back a list of Python floats already; copying 384 of them per hit one by
    # one was a third of a feed's time.
    return vector if isinstance(vector, list) else list(map(float, vector))


@dataclass(frozen=True)
class RangeBounds:
    """A range condition's bounds: numbers (a Qdrant Range) or canonical ISO-8601 datetimes (a DatetimeRange)."""

    bounds: dict[str, Any]
    is_datetime: bool


def range_bounds(key: str, value: Mapping[str, Any]) -> RangeBounds:
    """The validated bounds of the range condition value on key."""
    if not value or any(k not in RANGE_KEYS for k in value):
        allowed = ", ".join(RANGE_KEYS)
        raise InvalidInput(f"a range on {key!r} takes one or more of the keys {allowed}; got {sorted(map(str, value))}")
    if all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value.values()):
        return RangeBounds({k: float(v) for k, v in value.items()}, is_datetime=False)
    if all(isinstance(v, str) for v in value.values()):
        return RangeBounds({k: _iso_datetime(key, v) for k, v in value.items()}, is_datetime=True)
    raise InvalidInput(
        f"a range on {key!r} needs finite numbers or ISO-8601 datetime strings, all alike: {dict(value)}"
    )


def _iso_datetime(key: str, text: str) -> str:
    """text as an ISO-8601 datetime with an offset (UTC when it has none), as both adapters parse it alike."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"a range on {key!r}: {text!r} is no ISO-8601 datetime") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def point_ids(ids: Sequence[str]) -> list[str]:
    """ids in canonical UUID form; the engines disagree on other strings (an error or a silent miss)."""
    try:
        return [_canonical(str(i)) for i in ids]
    except ValueError as exc:
        raise InvalidInput(f"point ids are UUIDs: {exc}") from exc


@lru_cache(maxsize=65_536)
def _canonical(point_id: str) -> str:
    """One id's canonical form, remembered: a feed excludes the 200 items of a user's history."""
    return str(uuid.UUID(point_id))


def recommend_examples(*, positive: Examples, negative: Examples, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """The examples as rows of unit vectors (float64), so that each weighs alike whatever its
    length, once the query is valid (lists or a 2-D array in: one conversion either way)."""
    if strategy not in RECOMMEND_STRATEGIES:
        raise InvalidInput(f"unknown recommend strategy {strategy!r}; use one of {list(RECOMMEND_STRATEGIES)}")
    if len(positive) == 0:
        raise InvalidInput("a recommendation needs at least one positive example")
    if len({len(v) for v in [*positive, *negative]}) > 1:
        raise InvalidInput("the recommendation examples differ in dimension")
    return _units(positive), _units(negative)


def _units(vectors: Examples) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros((0, 0))
    rows = np.asarray(vectors, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    if not (np.all(np.isfinite(norms)) and np.all(norms > 0)):
        raise InvalidInput("a recommendation example must be a non-zero vector of finite numbers")
    return rows / norms[:, None]  # type: ignore[no-any-return]


def average_example(positive: np.ndarray, negative: np.ndarray) -> list[float]:
    """Qdrant's average_vector query: mean(positive) + (mean(positive) - mean(negative)), or mean(positive)."""
    mean_positive = positive.mean(axis=0)
    if len(negative) == 0:
        return mean_positive.tolist()  # type: ignore[no-any-return]
    return (2 * mean_positive - negative.mean(axis=0)).tolist()  # type: ignore[no-any-return]
