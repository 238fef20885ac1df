"""Embedded Qdrant never indexes by itself: build_indexes runs its optimizers when enough points are
outside an index, and searches answer the same before and after; a Qdrant server needs nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from services.vectors.base import VectorPoint
from services.vectors.qdrant_edge import QdrantEdgeStore
from services.vectors.qdrant_server import QdrantServerStore

NAME = "index_test"


def test_build_indexes_runs_when_due_and_searches_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 32))
    store = QdrantEdgeStore(tmp_path)
    try:
        store.ensure_collection(NAME, dimension=32, indexes=())
        store.upsert(
            NAME, [VectorPoint(str(uuid.UUID(int=i + 1)), v.tolist(), {"i": i}) for i, v in enumerate(vectors)]
        )
        before = [h.id for h in store.search(NAME, vectors[7].tolist(), limit=5)]
        assert store.build_indexes(min_unindexed=3001) == {}  # not due yet
        assert store.build_indexes(min_unindexed=1000) == {NAME: 3000}
        assert [h.id for h in store.search(NAME, vectors[7].tolist(), limit=5)] == before
        assert before[0] == str(uuid.UUID(int=8)) and store.count(NAME) == 3000
    finally:
        store.close()


def test_a_server_indexes_by_itself() -> None:
    store = QdrantServerStore.connect(":memory:")
    store.ensure_collection(NAME, dimension=4, indexes=())
    store.upsert(NAME, [VectorPoint(str(uuid.UUID(int=1)), [1.0, 0, 0, 0], {})])
    assert store.build_indexes(min_unindexed=1) == {}
    store.close()
