"""A VectorStore that is down on demand, for fault tests: while a marker file exists, every call
raises VectorStoreUnavailable before it reaches the adapter, as a store that does not answer
would. The embedded store lives inside the worker process, so it cannot be stopped from outside;
a test sets SIFT_VECTOR_FAULT_FILE and creates or removes the file to take it down and back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.errors import VectorStoreUnavailable
from services.vectors.base import Examples, Filters, Hit, PayloadIndex, VectorPoint, VectorStore


class FaultyStore:
    """Wraps a VectorStore; every call fails while marker exists."""

    def __init__(self, inner: VectorStore, *, marker: Path) -> None:
        self.inner = inner
        self.marker = marker

    def _check(self, operation: str) -> None:
        if self.marker.exists():
            raise VectorStoreUnavailable(f"cannot {operation}: the vector store is down (fault file {self.marker})")

    def ensure_collection(self, name: str, *, dimension: int, indexes: Sequence[PayloadIndex]) -> None:
        """Create the collection and its payload indexes when missing (idempotent)."""
        self._check("ensure a collection")
        self.inner.ensure_collection(name, dimension=dimension, indexes=indexes)

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        """Insert or overwrite points."""
        self._check("upsert")
        self.inner.upsert(name, points)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Remove points."""
        self._check("delete")
        self.inner.delete(name, ids)

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
        """Nearest points."""
        self._check("search")
        return self.inner.search(
            name,
            vector,
            limit=limit,
            filters=filters,
            exclude_ids=exclude_ids,
            with_vectors=with_vectors,
            with_payload=with_payload,
        )

    def search_batch(
        self, name: str, vectors: Examples, *, limit: int, filters: Sequence[Filters | None] | None = None
    ) -> list[list[Hit]]:
        """Nearest points for each vector."""
        self._check("search")
        return self.inner.search_batch(name, vectors, limit=limit, filters=filters)

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
        """Points like the positive examples and unlike the negative ones."""
        self._check("recommend")
        return self.inner.recommend(
            name,
            positive=positive,
            negative=negative,
            limit=limit,
            filters=filters,
            exclude_ids=exclude_ids,
            strategy=strategy,
            with_vectors=with_vectors,
            with_payload=with_payload,
        )

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        """Points by id."""
        self._check("retrieve")
        return self.inner.retrieve(name, ids, with_vectors=with_vectors)

    def count(self, name: str, *, filters: Filters | None = None) -> int:
        """Exact number of points."""
        self._check("count")
        return self.inner.count(name, filters=filters)

    def build_indexes(self, *, min_unindexed: int) -> dict[str, int]:
        """Build vector indexes where they are due."""
        self._check("build indexes")
        return self.inner.build_indexes(min_unindexed=min_unindexed)

    def warm(self, name: str) -> int:
        """Read the collection into the page cache."""
        self._check("warm")
        return self.inner.warm(name)

    def ping(self) -> None:
        """Raise VectorStoreUnavailable unless the store answers."""
        self._check("ping")
        self.inner.ping()

    def close(self) -> None:
        """Flush and release resources (also while down: shutting down must not fail)."""
        self.inner.close()
