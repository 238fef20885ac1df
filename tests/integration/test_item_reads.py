"""The feeds' cache of co-interaction neighbours and popularity over real SQLite: recorded
interactions count in the next feed at once, a deleted item leaves every neighbour list, another
process's changes are served at most SIFT_RECOMMEND_CACHE_S late beside a vector store server,
and a read that overlaps a change keeps nothing (services/recommend/item_reads.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.models import ItemStats
from services.embedding.encoder import Encoder
from services.recommend import reads
from services.recommend.feeds import Recommender
from services.recommend.item_reads import ItemReads
from services.runtime import Runtime
from tests.conftest import authorize
from tests.integration.test_recommend import _runtime, act, feed

HOUR = 3600.0


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    yield from _runtime(data_dir, encoder, recommend_cache_s=HOUR)  # a cache that would serve old reads for an hour


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as test_client:
        authorize(test_client, runtime)
        yield test_client


def _reason(items: list[dict[str, Any]], item_id: str) -> str:
    return next((str(i["reason"]) for i in items if i["item_id"] == item_id), "")


def _neighbours(runtime: Runtime, item_id: str) -> dict[tuple[str, str], float]:
    with runtime.db.read_scope() as session:
        return runtime.recommender.item_reads.neighbours(session, [item_id], per_item=30)


def _popularity(runtime: Runtime, ids: list[str], cache: ItemReads | None = None) -> dict[str, float]:
    with runtime.db.read_scope() as session:
        return (cache or runtime.recommender.item_reads).popularity(session, ids)


def test_interactions_recorded_after_a_feed_count_in_the_next_feed_at_once(
    client: TestClient, runtime: Runtime
) -> None:
    act(client, "ann", "pan", "view", minutes_ago=5)
    assert "also chose" not in _reason(feed(client, "ann", limit=15), "knife")  # pan's neighbours, read: none
    assert _popularity(runtime, ["pan", "knife"]) == {"pan": 1.0}
    act(client, "bob", "pan", "view", minutes_ago=3)
    act(client, "bob", "knife", "purchase", minutes_ago=2)
    assert _popularity(runtime, ["pan", "knife"]) == {"pan": 2.0, "knife": 1.0}
    assert _neighbours(runtime, "pan") == {("knife", "pan"): 1.0}
    assert "also chose" in _reason(feed(client, "ann", limit=15), "knife")


def test_a_deleted_item_leaves_every_neighbour_list_at_once(client: TestClient, runtime: Runtime) -> None:
    for user in ("ann", "bob"):
        act(client, user, "pan", "view", minutes_ago=3)
        act(client, user, "knife", "view", minutes_ago=2)
    assert _neighbours(runtime, "pan") == {("knife", "pan"): 2.0}
    act(client, "cy", "pan", "view", minutes_ago=3)
    act(client, "cy", "board", "view", minutes_ago=2)
    with runtime.db.read_scope() as session:  # a list read for another length is read again
        assert runtime.recommender.item_reads.neighbours(session, ["pan"], per_item=1) == {("knife", "pan"): 2.0}
    assert _neighbours(runtime, "pan") == {("knife", "pan"): 2.0, ("board", "pan"): 1.0}
    assert client.delete("/v1/items/knife").status_code == 204
    assert _neighbours(runtime, "pan") == {("board", "pan"): 1.0}
    assert _popularity(runtime, ["knife"]) == {}


def test_beside_a_server_another_process_s_changes_are_served_at_most_the_cache_s_late(
    client: TestClient, runtime: Runtime
) -> None:
    """Beside a vector store server, other API processes record interactions too: entries age out.
    Embedded, `sift up` records every interaction itself and forgets what it changes (the tests
    above): entries stay until then."""
    act(client, "ann", "pan", "view")
    embedded = runtime.recommender.item_reads
    settings = runtime.settings.model_copy(update={"qdrant_url": "http://qdrant.example:6333"})
    r = runtime.recommender
    server = Recommender(settings=settings, store=r.store, models=r.models, sessions=r.sessions, reads=r.reads)
    assert _popularity(runtime, ["pan"], server.item_reads) == {"pan": 1.0} == _popularity(runtime, ["pan"])
    with runtime.db.session_scope() as s:  # as another process would write it: this one is not told
        s.execute(sa.update(ItemStats).where(ItemStats.item_id == "pan").values(positives=7.0))
    assert _popularity(runtime, ["pan"], server.item_reads) == {"pan": 1.0}
    settings.recommend_cache_s = runtime.settings.recommend_cache_s = 0.0
    assert _popularity(runtime, ["pan"], server.item_reads) == {"pan": 7.0}
    assert _popularity(runtime, ["pan"], embedded) == {"pan": 1.0}


def test_a_read_that_overlaps_a_change_keeps_nothing(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    act(client, "ann", "pan", "view")
    cache = ItemReads(ttl_s=lambda: HOUR)
    calls: list[list[str]] = []
    original = reads.popularity

    def read_while_recording(session: Any, ids: list[str]) -> dict[str, float]:
        calls.append(list(ids))
        if len(calls) == 1:
            cache.forget(["pan"])  # a commit that changed pan lands while its old count is read
        return original(session, ids)

    monkeypatch.setattr(reads, "popularity", read_while_recording)
    with runtime.db.read_scope() as session:
        assert cache.popularity(session, ["pan"]) == {"pan": 1.0}
        assert cache.popularity(session, ["pan"]) == {"pan": 1.0}  # read again: the first read was not kept
        assert cache.popularity(session, ["pan"]) == {"pan": 1.0}
    assert calls == [["pan"], ["pan"]]


def test_the_cache_keeps_at_most_its_capacity_dropping_the_least_recently_used(runtime: Runtime) -> None:
    cache = ItemReads(ttl_s=lambda: HOUR, capacity=2)
    with runtime.db.read_scope() as session:
        cache.popularity(session, ["pan", "knife"])
        cache.popularity(session, ["board"])
        assert cache._popularity.keys() == ["knife", "board"]


def test_a_recommender_no_one_holds_is_freed_at_once_with_its_listeners(runtime: Runtime) -> None:
    import gc
    import weakref

    r = runtime.recommender
    made = Recommender(settings=r.settings, store=r.store, models=r.models, sessions=r.sessions, reads=r.reads)
    gone = weakref.ref(made)
    gc.disable()  # by reference counts alone: a cycle would keep it, and it would go on hearing recordings
    try:
        del made
        assert gone() is None
    finally:
        gc.enable()
