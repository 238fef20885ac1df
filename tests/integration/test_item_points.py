"""The feeds' item cache over the real embedded Qdrant: what it answers from memory, what it
fetches, and what it forgets (services/recommend/item_points.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.memo import Memo
from services.recommend.item_points import ItemPoints
from services.vectors.base import Hit, PayloadIndex, VectorPoint
from services.vectors.qdrant_edge import QdrantEdgeStore

NAME = "items"
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]


class CountingStore:
    """The real store, counting the points asked of retrieve."""

    def __init__(self, inner: QdrantEdgeStore) -> None:
        self.inner = inner
        self.retrieved: list[str] = []

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        self.retrieved += list(ids)
        return self.inner.retrieve(name, ids, with_vectors=with_vectors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _point(n: int, *, title: str | None = None, scale: float = 3.0) -> VectorPoint:
    vector = np.zeros(4)
    vector[n % 4] = scale
    vector[(n + 1) % 4] = 1.0
    return VectorPoint(IDS[n], vector.tolist(), {"event_id": f"item-{n}", "title": title or f"item {n}"})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    inner = QdrantEdgeStore(tmp_path / "qdrant")
    inner.ensure_collection(NAME, dimension=4, indexes=[PayloadIndex("event_id", "keyword")])
    inner.upsert(NAME, [_point(n) for n in range(5)])
    yield CountingStore(inner)
    inner.close()


def test_a_point_is_fetched_once_then_answered_from_memory_as_a_unit_vector(store: CountingStore) -> None:
    cache = ItemPoints(store)  # type: ignore[arg-type]
    first = cache.get(NAME, IDS[:3])
    assert store.retrieved == IDS[:3]
    again = cache.get(NAME, [IDS[2], IDS[3], IDS[5]])  # IDS[5] is not stored
    assert store.retrieved == [*IDS[:3], IDS[3], IDS[5]]
    assert np.array_equal(again[IDS[2]].vector, first[IDS[2]].vector) and IDS[5] not in again
    point = again[IDS[3]]
    assert point.item_id == "item-3" and point.payload["title"] == "item 3"
    assert point.vector.dtype == np.float32 and float(np.linalg.norm(point.vector)) == pytest.approx(1.0)
    assert point.vector == pytest.approx(np.array([1.0, 0, 0, 3.0]) / np.sqrt(10), abs=1e-6)


def test_a_forgotten_point_is_fetched_again_with_its_new_content(store: CountingStore) -> None:
    cache = ItemPoints(store)  # type: ignore[arg-type]
    assert cache.get(NAME, [IDS[0]])[IDS[0]].payload["title"] == "item 0"
    store.inner.upsert(NAME, [_point(0, title="renamed", scale=-3.0)])
    assert cache.get(NAME, [IDS[0]])[IDS[0]].payload["title"] == "item 0"  # not told: the old entry
    cache.forget(NAME, [IDS[0]])
    renamed = cache.get(NAME, [IDS[0]])[IDS[0]]
    assert renamed.payload["title"] == "renamed" and renamed.vector[0] < 0
    store.inner.delete(NAME, [IDS[1]])
    cache.forget(NAME, [IDS[1]])
    assert cache.get(NAME, [IDS[1]]) == {}


def test_entries_expire_and_the_least_recently_used_go_beyond_the_capacity(store: CountingStore) -> None:
    cache = ItemPoints(store, entries=Memo(2))  # type: ignore[arg-type]
    cache.get(NAME, [IDS[0], IDS[1]])
    cache.get(NAME, [IDS[0]])  # IDS[0] is now the most recently used
    cache.get(NAME, [IDS[2]])
    assert len(cache) == 2
    store.retrieved.clear()
    cache.get(NAME, [IDS[0], IDS[1], IDS[2]])
    assert store.retrieved == [IDS[1]]
    expired = ItemPoints(store, ttl_s=0.0)  # type: ignore[arg-type]
    expired.get(NAME, [IDS[4]])
    store.retrieved.clear()
    expired.get(NAME, [IDS[4]])
    assert store.retrieved == [IDS[4]]


def test_every_tenant_s_cache_shares_one_capacity_and_answers_only_for_its_own(store: CountingStore) -> None:
    entries: Memo[tuple[int, str, str]] = Memo(3)
    first = ItemPoints(store, entries=entries)  # type: ignore[arg-type]
    second = ItemPoints(store, entries=entries)  # type: ignore[arg-type]
    first.get(NAME, [IDS[0], IDS[1]])
    store.retrieved.clear()
    assert set(second.get(NAME, [IDS[0], IDS[1]])) == {IDS[0], IDS[1]}
    assert store.retrieved == [IDS[0], IDS[1]]  # not answered from the other tenant's entries
    assert (len(first), len(second)) == (1, 2)  # 3 in the process: first's least recent went
    store.retrieved.clear()
    first.get(NAME, [IDS[0], IDS[1]])
    assert store.retrieved == [IDS[0]]


def test_a_fetch_that_overlaps_a_forget_keeps_nothing(store: CountingStore) -> None:
    cache = ItemPoints(store)  # type: ignore[arg-type]
    original = store.retrieve

    def changed_meanwhile(name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        hits = original(name, ids, with_vectors=with_vectors)  # the old content, read before the change
        cache.forget(NAME, ids)  # the worker records the change while this fetch is under way
        return hits

    store.retrieve = changed_meanwhile  # type: ignore[method-assign]
    assert IDS[0] in cache.get(NAME, [IDS[0]])  # this request still gets an answer
    store.retrieve = original  # type: ignore[method-assign]
    store.retrieved.clear()
    cache.get(NAME, [IDS[0]])
    assert store.retrieved == [IDS[0]]  # nothing was kept: fetched again


def test_a_full_cache_adds_nothing_for_the_garbage_collector_to_traverse(store: CountingStore) -> None:
    ids = [f"00000000-0000-4000-9000-{n:012d}" for n in range(2000)]
    payload = {"title": "t", "text": "x" * 500, "metadata": {"category": "c", "tags": ["a", "b"]}, "price": 3.0}
    store.inner.upsert(
        NAME, [VectorPoint(i, [1.0, 0, 0, float(n)], {**payload, "event_id": f"e{n}"}) for n, i in enumerate(ids)]
    )
    cache = ItemPoints(store)  # type: ignore[arg-type]
    gc.collect()
    before = len(gc.get_objects())
    points = cache.get(NAME, ids)
    assert points[ids[7]].payload == {"event_id": "e7", "title": "t", "text": "x" * 200}  # what feeds read
    del points
    gc.collect()
    assert len(cache) == 2000 and len(gc.get_objects()) - before < 100
