"""The VectorStore contract: one suite that both adapters must pass. Qdrant Edge runs on a temporary
directory, the server adapter on qdrant-client's in-process local mode (the same client calls)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from services.errors import Conflict, InvalidInput, NotFound, VectorStoreUnavailable
from services.vectors import Hit, PayloadIndex, VectorPoint, VectorStore
from services.vectors.qdrant_edge import QdrantEdgeStore
from services.vectors.qdrant_server import QdrantServerStore

# Local mode ignores payload indexes and says so on every create_payload_index.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 8
N = 12
NAME = "contract_tickets"
INDEXES = (
    PayloadIndex("kind", "keyword"),
    PayloadIndex("entities", "keyword"),
    PayloadIndex("metadata.category", "keyword"),
    PayloadIndex("metadata.in_stock", "bool"),
    PayloadIndex("metadata.price", "float"),
    PayloadIndex("priority", "integer"),
    PayloadIndex("occurred_at", "datetime"),
)
CATEGORIES = ("billing", "shipping", "returns")
ADAPTERS = ["edge", "server"]


@dataclass
class Backend:
    """A store under test, plus how to reach the same data again and how to take it away."""

    store: VectorStore
    reopen: Callable[[VectorStore], VectorStore]  # as a restarted process would see it
    break_: Callable[[VectorStore], None]


@contextmanager
def open_backend(kind: str, root: Path) -> Iterator[Backend]:
    """A fresh store of kind (edge under root, server in local mode), closed afterwards."""
    opened: list[VectorStore] = []

    def track(store: VectorStore) -> VectorStore:
        opened.append(store)
        return store

    if kind == "edge":

        def reopen_edge(store: VectorStore) -> VectorStore:
            store.close()  # the shard directory can be open once only
            return track(QdrantEdgeStore(root))

        def break_edge(store: VectorStore) -> None:
            store.close()
            shutil.rmtree(root)

        yield Backend(track(QdrantEdgeStore(root)), reopen_edge, break_edge)
    else:
        client = QdrantClient(":memory:")
        yield Backend(
            track(QdrantServerStore(client)),
            lambda _store: track(QdrantServerStore(client)),  # another process on the same server
            lambda store: store.close(),
        )
    for store in opened:
        store.close()


@pytest.fixture(params=ADAPTERS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A store of its own, for tests that change or break it."""
    with open_backend(request.param, tmp_path / "vectors") as opened:
        yield opened


def unit(vector: np.ndarray) -> list[float]:
    return [float(x) for x in vector / np.linalg.norm(vector)]


VECTORS = [unit(v) for v in np.random.default_rng(7).standard_normal((N, DIM))]


def point_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sift-contract-{i}"))


def payload(i: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{i}",
        "kind": "ticket" if i % 2 == 0 else "review",
        "entities": [f"customer-{i % 4}", "acme"],
        "priority": i % 3,
        "occurred_at": f"2024-03-{i + 1:02d}T09:30:00+00:00",
        "metadata": {
            "category": CATEGORIES[i % 3],
            "in_stock": i % 4 == 0,
            "price": 9.5 + i,
            "extra": {"tags": ["a", "b"], "depth": {"level": 2, "seen_at": "2024-03-01T00:00:00Z"}},
        },
    }


POINTS = [VectorPoint(point_id(i), VECTORS[i], payload(i)) for i in range(N)]


def ids_where(predicate: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {p.id for p in POINTS if predicate(p.payload)}


@pytest.fixture
def filled(backend: Backend) -> VectorStore:
    """A store of its own holding POINTS."""
    backend.store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    backend.store.upsert(NAME, POINTS)
    return backend.store


@pytest.fixture(scope="module", params=ADAPTERS)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    """A store holding POINTS, shared by the tests that only read (creating one costs ~0.2 s on Edge)."""
    with open_backend(request.param, tmp_path_factory.mktemp("shared") / "vectors") as opened:
        opened.store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
        opened.store.upsert(NAME, POINTS)
        yield opened.store


def test_ensure_collection_is_idempotent_and_data_survives_a_reopen(backend: Backend) -> None:
    store = backend.store
    store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    store.upsert(NAME, POINTS)
    again = backend.reopen(store)
    again.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    assert again.count(NAME) == N
    [hit] = again.retrieve(NAME, [POINTS[5].id])
    assert hit.payload == POINTS[5].payload


def test_ensure_collection_with_another_dimension_is_a_conflict(backend: Backend) -> None:
    backend.store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    with pytest.raises(Conflict):
        backend.store.ensure_collection(NAME, dimension=DIM * 2, indexes=INDEXES)
    with pytest.raises(Conflict):
        backend.reopen(backend.store).ensure_collection(NAME, dimension=DIM * 2, indexes=INDEXES)


def test_upsert_then_count(backend: Backend) -> None:
    store = backend.store
    store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    assert store.count(NAME) == 0
    store.upsert(NAME, POINTS[:5])
    assert store.count(NAME) == 5
    store.upsert(NAME, [])
    assert store.count(NAME) == 5


def test_upserting_an_id_again_keeps_one_point_with_the_newer_payload(filled: VectorStore) -> None:
    target = POINTS[3]
    newer = VectorPoint(target.id, VECTORS[9], {**target.payload, "kind": "retried", "attempt": 2})
    filled.upsert(NAME, [newer])
    filled.upsert(NAME, [newer])
    assert filled.count(NAME) == N
    [hit] = filled.retrieve(NAME, [target.id], with_vectors=True)
    assert hit.payload == newer.payload
    assert hit.vector == pytest.approx(VECTORS[9], abs=1e-5)


def test_search_returns_the_nearest_first(shared: VectorStore) -> None:
    hits = shared.search(NAME, VECTORS[4], limit=5)
    assert len(hits) == 5
    assert hits[0].id == POINTS[4].id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({hit.id for hit in hits}) == 5


def test_search_with_an_exact_value_filter(shared: VectorStore) -> None:
    hits = shared.search(NAME, VECTORS[0], limit=N, filters={"kind": "review"})
    assert {hit.id for hit in hits} == ids_where(lambda p: p["kind"] == "review")
    assert POINTS[0].id not in {hit.id for hit in hits}


def test_search_with_an_any_of_filter_on_a_nested_key(shared: VectorStore) -> None:
    hits = shared.search(NAME, VECTORS[0], limit=N, filters={"metadata.category": ["billing", "returns"]})
    assert {hit.id for hit in hits} == ids_where(lambda p: p["metadata"]["category"] in {"billing", "returns"})


def test_search_with_several_keys_requires_all_of_them(shared: VectorStore) -> None:
    filters = {"kind": "ticket", "metadata.in_stock": True, "entities": ["customer-0"], "priority": 0}
    hits = shared.search(NAME, VECTORS[1], limit=N, filters=filters)
    expected = ids_where(
        lambda p: (
            p["kind"] == "ticket" and p["metadata"]["in_stock"] and "customer-0" in p["entities"] and p["priority"] == 0
        )
    )
    assert expected  # the data set must make this filter meaningful
    assert {hit.id for hit in hits} == expected


def test_bool_filters_match_bool_payloads(shared: VectorStore) -> None:
    in_stock = ids_where(lambda p: p["metadata"]["in_stock"])
    assert 0 < len(in_stock) < N
    hits = shared.search(NAME, VECTORS[0], limit=N, filters={"metadata.in_stock": True})
    assert {hit.id for hit in hits} == in_stock
    assert all(type(hit.payload["metadata"]["in_stock"]) is bool for hit in hits)  # not 1 / 0
    assert shared.count(NAME, filters={"metadata.in_stock": False}) == N - len(in_stock)
    assert shared.count(NAME, filters={"metadata.in_stock": [True]}) == len(in_stock)
    assert shared.count(NAME, filters={"metadata.in_stock": [True, False]}) == N


def test_a_filter_value_of_another_type_is_invalid_input(shared: VectorStore) -> None:
    with pytest.raises(InvalidInput):
        shared.search(NAME, VECTORS[0], limit=3, filters={"metadata.price": 10.5})
    with pytest.raises(InvalidInput):
        shared.count(NAME, filters={"kind": ["ticket", 3]})


def test_search_with_a_filter_that_matches_nothing_is_empty(shared: VectorStore) -> None:
    assert shared.search(NAME, VECTORS[0], limit=N, filters={"kind": "no-such-kind"}) == []
    assert shared.search(NAME, VECTORS[0], limit=N, filters={"metadata.category": []}) == []


def test_retrieve_by_ids_with_and_without_vectors(shared: VectorStore) -> None:
    unknown = str(uuid.uuid4())
    wanted = [POINTS[2].id, unknown, POINTS[7].id]
    with_vectors = {hit.id: hit for hit in shared.retrieve(NAME, wanted, with_vectors=True)}
    assert set(with_vectors) == {POINTS[2].id, POINTS[7].id}
    for i in (2, 7):
        hit = with_vectors[POINTS[i].id]
        assert hit.score == 1.0
        assert hit.payload == POINTS[i].payload
        assert hit.vector == pytest.approx(VECTORS[i], abs=1e-5)
    without = shared.retrieve(NAME, wanted)
    assert {hit.id for hit in without} == {POINTS[2].id, POINTS[7].id}
    assert all(hit.vector is None for hit in without)
    assert shared.retrieve(NAME, []) == []


def test_delete_removes_points_and_ignores_unknown_ids(filled: VectorStore) -> None:
    gone = [POINTS[0].id, POINTS[1].id]
    filled.delete(NAME, [*gone, str(uuid.uuid4())])
    assert filled.count(NAME) == N - 2
    assert filled.retrieve(NAME, gone) == []
    assert not {hit.id for hit in filled.search(NAME, VECTORS[0], limit=N)} & set(gone)


def test_count_with_filters(shared: VectorStore) -> None:
    assert shared.count(NAME, filters={"kind": "ticket"}) == len(ids_where(lambda p: p["kind"] == "ticket"))
    assert shared.count(NAME, filters={"priority": [1, 2]}) == len(ids_where(lambda p: p["priority"] in {1, 2}))
    assert shared.count(NAME, filters={"kind": "no-such-kind"}) == 0


def test_a_hit_round_trips_nested_metadata_and_iso_datetimes(shared: VectorStore) -> None:
    [hit] = shared.search(NAME, VECTORS[6], limit=1)
    assert isinstance(hit, Hit)
    assert hit.id == POINTS[6].id
    assert hit.payload == POINTS[6].payload
    assert hit.payload["occurred_at"] == "2024-03-07T09:30:00+00:00"
    assert hit.payload["metadata"]["extra"]["depth"] == {"level": 2, "seen_at": "2024-03-01T00:00:00Z"}


def test_ping_answers_while_the_store_is_there(backend: Backend) -> None:
    backend.store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    backend.store.ping()
    backend.break_(backend.store)
    with pytest.raises(VectorStoreUnavailable):
        backend.store.ping()


def test_a_vector_of_the_wrong_size_is_invalid_input(backend: Backend) -> None:
    backend.store.ensure_collection(NAME, dimension=DIM, indexes=INDEXES)
    with pytest.raises(InvalidInput):
        backend.store.upsert(NAME, [VectorPoint(point_id(99), [1.0, 0.0, 0.0], {})])
    assert backend.store.count(NAME) == 0


def test_an_unknown_collection_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.store.search("no_such_collection", VECTORS[0], limit=3)
