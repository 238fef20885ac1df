"""The VectorStore port. Adapters: qdrant_edge (embedded, in-process) and qdrant_server
(qdrant-client). Both pass tests/integration/test_vector_store_contract.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# A filter is {payload_key: value} (exact match) or {payload_key: [v1, v2]} (any of);
# every key must hold. Enough for the services' business filters; adapters translate it.
Filters = Mapping[str, Any]


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

    def search(self, name: str, vector: Sequence[float], *, limit: int, filters: Filters | None = None) -> list[Hit]:
        """Nearest points by cosine similarity, best first, honouring filters."""

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        """Points by id (score 1.0); unknown ids are left out."""

    def count(self, name: str, *, filters: Filters | None = None) -> int:
        """Exact number of points (matching filters)."""

    def ping(self) -> None:
        """Raise VectorStoreUnavailable unless the store answers."""

    def close(self) -> None:
        """Flush and release resources."""


def plain_vector(vector: Any) -> list[float] | None:
    """A stored vector as a list of floats; of named vectors, Sift uses only the default one ("")."""
    if isinstance(vector, dict):
        vector = vector.get("")
    return None if vector is None else [float(x) for x in vector]
