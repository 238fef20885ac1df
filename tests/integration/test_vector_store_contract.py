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

# Hand-made 4-d points for recommendations, where the geometry is plain: their cosines to x are 1, .95, .6, .5,
# 0, 0, 0 and -1, and xy is nearer y than x.
RECO = "contract_reco"
NEAR_X = {"x": [1, 0, 0, 0], "x_near": [0.95, 0, 0, 0.312], "xy": [0.6, 0.8, 0, 0], "xz": [0.5, 0, 0.866, 0]}
RECO_VECTORS = NEAR_X | {"y": [0, 1, 0, 0], "z": [0, 0, 1, 0], "w": [0, 0, 0, 1], "anti_x": [-1, 0, 0, 0]}
GROUP_B = {"x_near", "xz", "z", "anti_x"}
RECO_POINTS = [
    VectorPoint(point_id(100 + i), unit(np.array(v)), {"name": k, "group": "b" if k in GROUP_B else "a"})
    for i, (k, v) in enumerate(RECO_VECTORS.items())
]
RECO_ID = {p.payload["name"]: p.id for p in RECO_POINTS}
X, Y, Z = RECO_VECTORS["x"], RECO_VECTORS["y"], RECO_VECTORS["z"]
STRATEGIES = ["average_vector", "best_score"]


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
        opened.store.ensure_collection(RECO, dimension=4, indexes=[PayloadIndex("group", "keyword")])
        opened.store.upsert(RECO, RECO_POINTS)
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


def test_without_payload_a_search_or_recommendation_gives_the_same_ids_and_scores_only(shared: VectorStore) -> None:
    full = shared.search(NAME, VECTORS[4], limit=5, filters={"kind": "review"})
    bare = shared.search(NAME, VECTORS[4], limit=5, filters={"kind": "review"}, with_payload=False)
    assert [(h.id, round(h.score, 5)) for h in bare] == [(h.id, round(h.score, 5)) for h in full]
    assert all(h.payload == {} and h.vector is None for h in bare) and all(h.payload for h in full)
    [top] = shared.recommend(RECO, positive=[X], limit=1, with_payload=False, with_vectors=True)
    assert top.payload == {} and top.vector == pytest.approx(X, abs=1e-5)


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


def test_a_batch_search_gives_each_vector_the_hits_of_its_own_search(shared: VectorStore) -> None:
    vectors = [VECTORS[i] for i in (4, 0, 1, 2, 7)]
    filters = [None, {"kind": "review"}, {"metadata.category": ["billing", "returns"]}, {"kind": "no-such-kind"}, None]
    batch = shared.search_batch(NAME, np.array(vectors), limit=5, filters=filters)
    alone = [shared.search(NAME, v, limit=5, filters=f) for v, f in zip(vectors, filters, strict=True)]
    pairs = [[(h.id, h.payload) for h in hits] for hits in alone]
    assert [[(h.id, h.payload) for h in hits] for hits in batch] == pairs
    assert [[h.score for h in hits] for hits in batch] == [pytest.approx([h.score for h in hits]) for hits in alone]
    assert batch[0][0].id == POINTS[4].id
    assert {h.payload["kind"] for h in batch[1]} == {"review"}
    assert batch[3] == []
    assert shared.search_batch(NAME, [VECTORS[4]], limit=3) == [shared.search(NAME, VECTORS[4], limit=3)]
    assert shared.search_batch(NAME, [], limit=3) == []


def test_a_batch_search_needs_one_filter_per_vector(shared: VectorStore) -> None:
    with pytest.raises(InvalidInput, match="2 vectors and 1 filters"):
        shared.search_batch(NAME, [VECTORS[0], VECTORS[1]], limit=3, filters=[None])


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


def test_warm_reads_an_embedded_collection_from_disk_and_changes_nothing(filled: VectorStore) -> None:
    before = filled.search(NAME, VECTORS[3], limit=3)
    read = filled.warm(NAME)
    if isinstance(filled, QdrantEdgeStore):  # every file of the shard, read once
        on_disk = sum(p.stat().st_size for p in (filled.root / NAME).rglob("*") if p.is_file())
        assert 0 < read <= on_disk
    else:  # a server keeps its own storage warm
        assert read == 0
    assert filled.search(NAME, VECTORS[3], limit=3) == before
    assert filled.warm("no_such_collection") == 0


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
    with pytest.raises(NotFound):
        backend.store.recommend("no_such_collection", positive=[VECTORS[0]], limit=3)
    with pytest.raises(NotFound):
        backend.store.search_batch("no_such_collection", [VECTORS[0]], limit=3)


def names(hits: list[Hit]) -> list[str]:
    return [hit.payload["name"] for hit in hits]


def test_numeric_range_filters_bound_floats_and_ints(shared: VectorStore) -> None:
    inclusive = {"metadata.price": {"gte": 12, "lte": 15.5}}  # prices are 9.5 + i: an int bound on floats
    hits = shared.search(NAME, VECTORS[0], limit=N, filters=inclusive)  # both bounds are included
    assert {hit.id for hit in hits} == {point_id(i) for i in (3, 4, 5, 6)}
    assert shared.count(NAME, filters={"metadata.price": {"gt": 12.5, "lt": 15.5}}) == 2
    assert shared.count(NAME, filters={"priority": {"gte": 1}}) == 8  # priorities are i % 3
    assert shared.count(NAME, filters={"priority": {"gt": 0, "lt": 1.5}}) == 4  # a float bound on ints
    mixed = {"kind": "ticket", "metadata.in_stock": True, "metadata.price": {"lt": 17}}  # i = 0, 4; not 8 (17.5)
    assert {hit.id for hit in shared.search(NAME, VECTORS[0], limit=N, filters=mixed)} == {point_id(0), point_id(4)}


def test_datetime_range_filters_compare_instants(shared: VectorStore) -> None:
    window = {"occurred_at": {"gte": "2024-03-03T10:30:00+01:00", "lt": "2024-03-06T09:30:00Z"}}  # 03-(i+1)T09:30Z
    hits = shared.search(NAME, VECTORS[0], limit=N, filters=window)
    assert {hit.id for hit in hits} == {point_id(i) for i in (2, 3, 4)}
    assert shared.count(NAME, filters={"occurred_at": {"gt": "2024-03-10T00:00:00"}}) == 3  # no offset: UTC
    assert shared.count(NAME, filters={"occurred_at": {"lte": "2024-03-01T09:30:00+00:00"}}) == 1


KEYS, BOUNDS = "gte, gt, lte, lt", "finite numbers or ISO-8601"
BAD_RANGES = [({}, KEYS), ({"from": 1}, KEYS), ({"gte": 1, "max": 2}, KEYS), ({"gte": True}, BOUNDS)]
BAD_RANGES += [({"gte": None}, BOUNDS), ({"gte": float("nan")}, BOUNDS), ({"gte": 1, "lt": "2024-03-01"}, BOUNDS)]
BAD_RANGES += [({"gt": "last tuesday"}, "no ISO-8601 datetime")]


@pytest.mark.parametrize(("bounds", "message"), BAD_RANGES)
def test_a_bad_range_is_invalid_input(shared: VectorStore, bounds: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        shared.count(NAME, filters={"metadata.price": bounds})
    with pytest.raises(InvalidInput, match=message):
        shared.search(NAME, VECTORS[0], limit=3, filters={"metadata.price": bounds})


def test_search_leaves_out_excluded_ids_still_fills_the_limit_and_returns_vectors(shared: VectorStore) -> None:
    ranked = [hit.id for hit in shared.search(NAME, VECTORS[4], limit=N)]
    assert [hit.id for hit in shared.search(NAME, VECTORS[4], limit=5, exclude_ids=ranked[:3])] == ranked[3:8]
    in_stock = shared.search(NAME, VECTORS[0], limit=N, filters={"metadata.in_stock": True}, exclude_ids=[point_id(0)])
    assert {hit.id for hit in in_stock} == {point_id(4), point_id(8)}
    with pytest.raises(InvalidInput):
        shared.search(NAME, VECTORS[4], limit=5, exclude_ids=["not-a-uuid"])
    hits = shared.search(NAME, VECTORS[3], limit=3, with_vectors=True)
    assert [len(hit.vector or []) for hit in hits] == [DIM] * 3
    assert hits[0].vector == pytest.approx(VECTORS[3], abs=1e-5)  # the nearest is the point itself
    assert all(hit.vector is None for hit in shared.search(NAME, VECTORS[3], limit=3))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_recommend_ranks_points_by_nearness_to_the_positive_examples(shared: VectorStore, strategy: str) -> None:
    hits = shared.recommend(RECO, positive=[[3.0, 0, 0, 0]], limit=len(RECO_POINTS), strategy=strategy)
    assert names(hits)[:4] == ["x", "x_near", "xy", "xz"]  # an example's length does not matter
    assert names(hits)[-1] == "anti_x"
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    # average_vector scores are cosine similarities; best_score squashes them into [-0.75, 0.75]
    assert scores[0] == pytest.approx({"average_vector": 1.0, "best_score": 0.75}[strategy], abs=1e-4)
    assert set(names(shared.recommend(RECO, positive=[X, Z], limit=4, strategy=strategy))) == {"x", "z", "xz", "x_near"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_negative_example_pushes_the_points_near_it_down(shared: VectorStore, strategy: str) -> None:
    before = shared.recommend(RECO, positive=[X], limit=4, strategy=strategy)
    after = shared.recommend(RECO, positive=[X], negative=[[0, 3, 0, 0]], limit=len(RECO_POINTS), strategy=strategy)
    assert names(before).index("xy") < names(before).index("xz")
    assert names(after)[:3] == ["x", "x_near", "xz"]
    assert names(after).index("y") > names(after).index("z")
    score = {hit.payload["name"]: hit.score for hit in after}
    assert score["xy"] < before[names(before).index("xy")].score
    if strategy == "best_score":  # nearer a negative than any positive: a negative score
        assert score["xy"] < 0 < score["xz"]
    else:  # the query is 2x - y: each example counts at unit length
        assert score["x"] == pytest.approx(2 / 5**0.5, abs=1e-4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_recommend_honours_filters_exclusions_and_with_vectors(shared: VectorStore, strategy: str) -> None:
    exclude = [RECO_ID["x_near"]]
    hits = shared.recommend(RECO, positive=[X], limit=2, filters={"group": "b"}, exclude_ids=exclude, strategy=strategy)
    assert names(hits) == ["xz", "z"]  # group b by nearness to x is x_near, xz, z, anti_x
    assert all(hit.vector is None for hit in hits)
    [top] = shared.recommend(RECO, positive=[X], limit=1, with_vectors=True, strategy=strategy)
    assert top.vector == pytest.approx(X, abs=1e-5)


BAD_RECOMMENDATIONS = [([X], "sum_scores"), ([X], "AVERAGE_VECTOR"), ([], "average_vector"), ([], "best_score")]
BAD_RECOMMENDATIONS += [([[0.0, 0, 0, 0]], "best_score"), ([[1.0, 0]], "average_vector"), ([[1.0, 0]], "best_score")]


@pytest.mark.parametrize(("positive", "strategy"), BAD_RECOMMENDATIONS)
def test_a_bad_recommendation_is_invalid_input(shared: VectorStore, positive: list[list[float]], strategy: str) -> None:
    with pytest.raises(InvalidInput):
        shared.recommend(RECO, positive=positive, negative=[Y], limit=3, strategy=strategy)
