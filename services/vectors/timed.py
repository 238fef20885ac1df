"""A VectorStore that times every data call (sift_vector_store_duration_seconds{operation}) and
hands it to the adapter underneath: one wrapper, so no call site in the domain has to time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from services import metrics
from services.errors import Transient
from services.vectors.base import Examples, Filters, Hit, PayloadIndex, VectorPoint, VectorStore


class TimedStore:
    """Wraps a VectorStore; upsert, delete, search, recommend, retrieve and count are timed."""

    def __init__(self, inner: VectorStore) -> None:
        self.inner = inner
        # (when, why) of the last write, while it failed; readiness reports it (a store that
        # cannot write must not look healthy while events pile up).
        self.write_failure: tuple[float, str] | None = None

    def _write(self, operation: str, call: Callable[[], None]) -> None:
        with metrics.vector_timer(operation):
            try:
                call()
            except Transient as exc:
                self.write_failure = (time.time(), exc.message)
                raise
        self.write_failure = None

    def ensure_collection(self, name: str, *, dimension: int, indexes: Sequence[PayloadIndex]) -> None:
        """Create the collection and its payload indexes when missing (idempotent)."""
        self.inner.ensure_collection(name, dimension=dimension, indexes=indexes)

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        """Insert or overwrite points."""
        self._write("upsert", lambda: self.inner.upsert(name, points))

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Remove points."""
        self._write("delete", lambda: self.inner.delete(name, ids))

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
        with metrics.vector_timer("search"):
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
        """Nearest points for each vector, in one call."""
        with metrics.vector_timer("search_batch"):
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
        with metrics.vector_timer("recommend"):
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
        with metrics.vector_timer("retrieve"):
            return self.inner.retrieve(name, ids, with_vectors=with_vectors)

    def count(self, name: str, *, filters: Filters | None = None) -> int:
        """Exact number of points."""
        with metrics.vector_timer("count"):
            return self.inner.count(name, filters=filters)

    def build_indexes(self, *, min_unindexed: int) -> dict[str, int]:
        """Build vector indexes where they are due (not timed: maintenance, not a request)."""
        return self.inner.build_indexes(min_unindexed=min_unindexed)

    def warm(self, name: str) -> int:
        """Read the collection into the page cache (not timed: start-up, not a request)."""
        return self.inner.warm(name)

    def ping(self) -> None:
        """Raise VectorStoreUnavailable unless the store answers."""
        self.inner.ping()

    def close(self) -> None:
        """Flush and release resources."""
        self.inner.close()
