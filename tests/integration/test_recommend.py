"""Recommendation feeds end to end with the real model, embedded Qdrant, and SQLite or PostgreSQL:
items through the pipeline, interactions through the API, feeds, similar items, re-ranking,
deletion, filters, cold start, determinism, a bounded read per feed, and bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.models import Event, Interaction, ItemPair, ItemStats
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.recommend import reads
from services.recommend.feeds import Recommender
from services.recommend.item_points import ENTRY_TTL_S
from services.runtime import Runtime
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import run_batch

NOW = datetime.now(UTC)
PRODUCTS: list[tuple[str, str, str, float, bool]] = [  # id, text, category, price, in stock
    ("shoe-road", "lightweight road running shoes for marathon training", "sport", 120.0, True),
    ("shoe-trail", "trail running shoes with deep grip for muddy paths", "sport", 140.0, True),
    ("shoe-race", "carbon plate racing shoes for fast running", "sport", 220.0, False),
    ("socks-run", "breathable running socks, pack of three", "sport", 15.0, True),
    ("socks-run2", "breathable running socks, pack of five", "sport", 22.0, True),
    ("jacket-run", "waterproof running jacket with reflective strips", "sport", 90.0, True),
    ("yoga-mat", "non-slip yoga mat for home workouts", "sport", 30.0, True),
    ("pan", "stainless steel frying pan, 28 cm", "kitchen", 45.0, True),
    ("saucepan", "non-stick saucepan set with glass lids", "kitchen", 80.0, True),
    ("knife", "japanese chef's knife for slicing vegetables", "kitchen", 110.0, True),
    ("board", "bamboo cutting board for the kitchen", "kitchen", 25.0, False),
    ("novel-sf", "science fiction novel about a colony on mars", "books", 12.0, True),
    ("novel-crime", "crime novel: a detective hunts a serial thief in london", "books", 10.0, True),
    ("phones", "wireless noise-cancelling headphones", "electronics", 250.0, True),
    ("charger", "usb-c fast charger for phones and laptops", "electronics", 30.0, True),
]
NEWS: list[tuple[str, str, timedelta]] = [
    ("news-old", "Central bank raises interest rates to fight inflation", timedelta(days=20)),
    ("news-new", "Central bank signals further interest rate increases", timedelta(hours=1)),
    ("news-sport", "Local team wins the regional football cup", timedelta(hours=2)),
]


def _events() -> list[ingest.EventIn]:
    products = [
        ingest.EventIn(
            id=item_id,
            kind="product",
            text=text,
            metadata={"category": category, "price": price, "in_stock": stock, "brand": "acme" if i % 2 else "zenith"},
        )
        for i, (item_id, text, category, price, stock) in enumerate(PRODUCTS)
    ]
    news = [
        ingest.EventIn(id=item_id, kind="news", text=text, metadata={"published_at": (NOW - age).isoformat()})
        for item_id, text, age in NEWS
    ]
    return products + news


def _runtime(data_dir: Path, encoder: Encoder, **overrides: Any) -> Iterator[Runtime]:
    with open_runtime(
        settings_for(data_dir, model_reload_s=60, item_filter_fields={"brand": "keyword"}, **overrides), encoder
    ) as rt:
        events = _events()
        with rt.db.session_scope() as s:
            ingest.accept(s, events=events, limits=ingest.Limits(max_events=100, max_text_chars=1000))
        assert run_batch([e.id for e in events if e.id])["done"] == len(events)
        yield rt


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    yield from _runtime(data_dir, encoder)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as test_client:
        authorize(test_client, runtime)
        yield test_client


def act(client: TestClient, user: str, item: str, kind: str, minutes_ago: float = 0, **extra: Any) -> dict[str, Any]:
    body = {"user_id": user, "item_id": item, "type": kind, "ts": (NOW - timedelta(minutes=minutes_ago)).isoformat()}
    response = client.post("/v1/interactions", json={**body, **extra})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def feed(client: TestClient, user: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/users/{user}/feed", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["item_id"] for item in items]


def rank(client: TestClient, user: str, item_ids: list[str]) -> list[str]:
    response = client.post(f"/v1/users/{user}/rank", json={"item_ids": item_ids})
    assert response.status_code == 200, response.text
    return ids(response.json()["items"])


def test_seen_and_bought_items_never_return_and_the_feed_follows_the_history(client: TestClient) -> None:
    act(client, "ann", "shoe-road", "view", minutes_ago=10)
    act(client, "ann", "shoe-trail", "purchase", minutes_ago=5)
    items = feed(client, "ann", limit=20)
    assert items and not {"shoe-road", "shoe-trail"} & set(ids(items))
    assert {i["kind"] for i in items} == {"product"}  # the kind of the user's latest interaction
    assert ids(items)[0] in {"shoe-race", "socks-run", "socks-run2", "jacket-run"}  # running gear first
    assert "because you" in items[0]["reason"] and "running shoes" in items[0]["reason"]
    assert all(isinstance(i["score"], float) for i in items)
    assert [i["score"] for i in items[:3]] != sorted(i["score"] for i in items[:3])  # best first (not ascending)


def test_dismissed_items_pull_similar_items_down(client: TestClient) -> None:
    for user in ("bea", "cat"):
        act(client, user, "shoe-road", "like", minutes_ago=10)
    act(client, "cat", "socks-run", "dismiss", minutes_ago=1)
    plain, dismissing = feed(client, "bea", limit=10), feed(client, "cat", limit=10)
    assert "socks-run" in ids(plain) and "socks-run" not in ids(dismissing)  # a dismissed item is seen
    assert "socks-run2" in ids(plain)
    assert "socks-run2" not in ids(dismissing) or ids(dismissing).index("socks-run2") > ids(plain).index("socks-run2")
    others = ["socks-run2", "pan", "jacket-run"]
    before = {
        i["item_id"]: i["score"] for i in client.post("/v1/users/bea/rank", json={"item_ids": others}).json()["items"]
    }
    after = {
        i["item_id"]: i["score"] for i in client.post("/v1/users/cat/rank", json={"item_ids": others}).json()["items"]
    }
    assert after["socks-run2"] < before["socks-run2"] - 0.2  # its near-duplicate loses most
    assert before["socks-run2"] - after["socks-run2"] > 2 * (before["pan"] - after["pan"])
    order = rank(client, "cat", ["socks-run2", "jacket-run", "shoe-race"])
    assert order[-1] == "socks-run2"


def test_filters_hold_in_feeds_and_similar_items(client: TestClient, runtime: Runtime) -> None:
    act(client, "dan", "shoe-road", "view")
    prices = {p[0]: (p[2], p[3], p[4]) for p in PRODUCTS}
    cheap = feed(client, "dan", limit=20, max_price=50, in_stock="true")
    assert cheap and all(prices[i][1] <= 50 and prices[i][2] for i in ids(cheap))
    kitchen = feed(client, "dan", limit=20, category="kitchen", min_price=30)
    assert sorted(ids(kitchen)) == ["knife", "pan", "saucepan"]
    both = feed(client, "dan", limit=20, category=["kitchen", "books"], max_price=30)
    assert sorted(ids(both)) == ["board", "novel-crime", "novel-sf"]
    declared = feed(client, "dan", limit=20, meta="brand:acme")
    assert declared and all(PRODUCTS[[p[0] for p in PRODUCTS].index(i)][0] for i in ids(declared))
    acme = {p[0] for n, p in enumerate(PRODUCTS) if n % 2}
    assert set(ids(declared)) <= acme
    fresh = feed(client, "dan", kind="news", published_after=(NOW - timedelta(days=2)).isoformat())
    assert sorted(ids(fresh)) == ["news-new", "news-sport"]
    similar = client.get("/v1/items/shoe-road/similar", params={"limit": 3, "max_price": 150})
    assert similar.status_code == 200, similar.text
    found = similar.json()["items"]
    assert found[0]["item_id"] == "shoe-trail" and "shoe-road" not in ids(found)
    assert all(prices[i][1] <= 150 for i in ids(found)) and "similar to" in found[0]["reason"]


def test_cold_start_gets_trending_items_under_the_same_filters(client: TestClient) -> None:
    for n, user in enumerate(("u1", "u2", "u3")):
        act(client, user, "knife", "view", minutes_ago=n)
        act(client, user, "pan", "purchase", minutes_ago=n)
    act(client, "u1", "phones", "view")
    act(client, "u4", "novel-sf", "view", minutes_ago=60 * 24 * 30)  # outside the trending window
    items = feed(client, "nobody", limit=3)
    assert ids(items)[:2] in (["knife", "pan"], ["pan", "knife"]) and ids(items)[2] == "phones"
    assert all(i["reason"] == "popular right now" for i in items)
    electronics = feed(client, "nobody", limit=5, category="electronics")
    assert ids(electronics) == ["phones", "charger"] and electronics[1]["reason"] == "new"


def test_co_interactions_bring_items_the_text_cannot(client: TestClient) -> None:
    for user in ("p1", "p2", "p3", "p4"):  # people who buy the knife also buy the crime novel
        act(client, user, "knife", "purchase", minutes_ago=30)
        act(client, user, "novel-crime", "purchase", minutes_ago=20)
    act(client, "eve", "knife", "purchase")
    items = feed(client, "eve", limit=5)
    assert "novel-crime" in ids(items)
    reason = next(i["reason"] for i in items if i["item_id"] == "novel-crime")
    assert reason.startswith("people who bought") and "knife" in reason
    assert rank(client, "eve", ["novel-sf", "novel-crime"]) == ["novel-crime", "novel-sf"]


def test_deleted_items_disappear_everywhere(client: TestClient) -> None:
    act(client, "fay", "shoe-road", "view")
    assert "shoe-trail" in ids(feed(client, "fay", limit=20))
    assert client.delete("/v1/items/shoe-trail").status_code == 204
    assert "shoe-trail" not in ids(feed(client, "fay", limit=20))
    similar = client.get("/v1/items/shoe-road/similar", params={"limit": 20}).json()["items"]
    assert "shoe-trail" not in ids(similar)
    assert client.post("/v1/users/fay/rank", json={"item_ids": ["shoe-trail"]}).status_code == 404
    assert (
        client.post("/v1/interactions", json={"user_id": "fay", "item_id": "shoe-trail", "type": "view"}).status_code
        == 404
    )
    assert client.delete("/v1/items/shoe-trail").status_code == 404
    assert client.get("/v1/events/shoe-trail").status_code == 404


def test_an_updated_item_is_filtered_on_its_new_payload(client: TestClient, runtime: Runtime) -> None:
    act(client, "gil", "pan", "view")
    assert "knife" in ids(feed(client, "gil", limit=20, category="kitchen"))
    changed = ingest.EventIn(id="knife", kind="product", text="japanese chef's knife", metadata={"category": "tools"})
    with runtime.db.session_scope() as s:
        ingest.accept(s, events=[changed], limits=ingest.Limits(max_events=10, max_text_chars=1000))
    run_batch(["knife"])
    assert "knife" not in ids(feed(client, "gil", limit=20, category="kitchen"))
    assert ids(feed(client, "gil", limit=20, category="tools")) == ["knife"]


def test_a_feed_shows_an_item_sent_again_with_its_new_text_at_once(client: TestClient, runtime: Runtime) -> None:
    act(client, "ida", "knife", "view")
    before = [item["reason"] for item in feed(client, "ida", limit=5, category="kitchen")]  # knife's point cached
    assert any("for slicing vegetables" in reason for reason in before), before
    changed = ingest.EventIn(id="knife", kind="product", text="ceramic paring knife", metadata={"category": "kitchen"})
    with runtime.db.session_scope() as s:
        ingest.accept(s, events=[changed], limits=ingest.Limits(max_events=10, max_text_chars=1000))
    run_batch(["knife"])
    after = [item["reason"] for item in feed(client, "ida", limit=5, category="kitchen")]
    assert any("ceramic paring knife" in reason for reason in after), after
    assert not any("for slicing vegetables" in reason for reason in after), after


def test_the_same_state_gives_the_same_feed(client: TestClient) -> None:
    act(client, "hal", "novel-sf", "like")
    act(client, "hal", "phones", "view")
    first = client.get("/v1/users/hal/feed", params={"limit": 10}).json()
    assert all(client.get("/v1/users/hal/feed", params={"limit": 10}).json() == first for _ in range(3))


def test_a_feed_reads_a_bounded_history_whatever_its_length(data_dir: Path, encoder: Encoder, runtime: Runtime) -> None:
    runtime.settings.recommend_history = 4
    runtime.recommender.settings.recommend_history = 4
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        items = [p[0] for p in PRODUCTS]
        for n, item in enumerate(items[:10]):
            act(client, "long", item, "view", minutes_ago=100 - n)
        act(client, "short", items[0], "view")
        feed(client, "short", limit=20)  # fills the trending and popularity caches
        statements: list[str] = []
        sa.event.listen(runtime.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        runtime.recommender.item_reads.forget(items)  # each feed reads its neighbours and popularity
        long_feed = feed(client, "long", limit=20)
        long_count = len(statements)
        statements.clear()
        runtime.recommender.item_reads.forget(items)
        feed(client, "short", limit=20)
        assert long_count == len(statements)  # the same statements, whatever the history's length
        # only the 4 latest interactions are read: older items may come back, newer never do
        assert not set(items[6:10]) & set(ids(long_feed)) and set(items[:6]) & set(ids(long_feed))


@pytest.fixture
def pg_client(data_dir: Path, encoder: Encoder, pg_url: str) -> Iterator[tuple[TestClient, Runtime]]:
    for rt in _runtime(data_dir, encoder, database_url=pg_url):
        with TestClient(create_app(rt, warm_model=False)) as test_client:
            authorize(test_client, rt)
            yield test_client, rt


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_retried_interactions_count_once(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        client, runtime = request.getfixturevalue("client"), request.getfixturevalue("runtime")
    else:
        client, runtime = request.getfixturevalue("pg_client")
    batch = {
        "interactions": [
            {"user_id": "ivy", "item_id": "pan", "type": "view", "ts": NOW.isoformat()},
            {"user_id": "ivy", "item_id": "knife", "type": "purchase", "ts": NOW.isoformat()},
            {"user_id": "ivy", "item_id": "pan", "type": "dismiss", "id": "client-key-1"},
        ]
    }
    first = client.post("/v1/interactions", json=batch).json()
    again = client.post("/v1/interactions", json=batch).json()
    assert first["new"] == 3 and again["new"] == 0 and again["ids"] == first["ids"]
    with runtime.db.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 3
        assert {r.item_id: r.positives for r in s.scalars(sa.select(ItemStats))} == {"pan": 1.0, "knife": 1.0}
        assert {(r.item_id, r.other_id): r.weight for r in s.scalars(sa.select(ItemPair))} == {
            ("pan", "knife"): 1.0,
            ("knife", "pan"): 1.0,
        }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("post", "/v1/interactions", {"user_id": "x", "item_id": "nope", "type": "view"}, 404, "unknown item"),
        ("post", "/v1/interactions", {"user_id": "x", "item_id": "pan", "type": "stare"}, 422, "type must be one of"),
        ("post", "/v1/interactions", {"user_id": "", "item_id": "pan", "type": "view"}, 422, "user_id"),
        ("post", "/v1/interactions", {"interactions": []}, 422, "interactions"),
        ("post", "/v1/users/x/rank", {"item_ids": []}, 422, "item_ids"),
        ("post", "/v1/users/x/rank", {"item_ids": ["pan", "nope"]}, 404, "unknown item"),
        ("get", "/v1/users/x/feed?kind=ticket", None, 422, "kind must be one of"),
        ("get", "/v1/users/x/feed?min_price=10&max_price=5", None, 422, "min_price"),
        ("get", "/v1/users/x/feed?meta=colour:red", None, 422, "SIFT_ITEM_FILTER_FIELDS"),
        ("get", "/v1/users/x/feed?limit=0", None, 422, "limit"),
        ("get", "/v1/items/nope/similar", None, 404, "unknown item"),
        ("delete", "/v1/items/nope", None, 404, "no item"),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    client: TestClient, runtime: Runtime, method: str, path: str, body: Any, status: int, words: str
) -> None:
    mixed = {
        "interactions": [
            {"user_id": "x", "item_id": "pan", "type": "view"},
            {"user_id": "x", "item_id": "nope", "type": "view"},
        ]
    }
    assert client.post("/v1/interactions", json=mixed).status_code == 404
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert words in response.text
    with runtime.db.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 0


def test_an_item_deleted_while_a_worker_embeds_it_does_not_come_back(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = runtime.pipeline
    prepare = pipeline.prepare

    def deleted_meanwhile(events: Any, *, now: datetime) -> Any:
        assert client.delete("/v1/items/late").status_code == 204  # deleted after the worker claimed it...
        return prepare(events, now=now)  # ...which then encodes it and writes its point

    monkeypatch.setattr(pipeline, "prepare", deleted_meanwhile)
    with runtime.db.session_scope() as s:
        late = ingest.EventIn(id="late", kind="product", text="running shoes, late arrival")  # type: ignore[arg-type]
        ingest.accept(s, events=[late], limits=ingest.Limits(max_events=10, max_text_chars=1000))
    run_batch(["late"])
    collection = runtime.models.for_kind("product").collection
    assert runtime.store.count(collection, filters={"event_id": "late"}) == 0
    assert client.get("/v1/events/late").status_code == 404


def test_a_stale_trending_list_is_served_while_it_is_refreshed_in_the_background(
    client: TestClient, runtime: Runtime
) -> None:
    import time

    runtime.recommender.settings.recommend_cache_s = 0.0  # every read after the first is stale
    act(client, "t1", "knife", "view")
    assert ids(feed(client, "nobody", limit=1)) == ["knife"]
    for user in ("t2", "t3"):
        act(client, user, "phones", "view")
    deadline = time.monotonic() + 10
    while ids(feed(client, "nobody", limit=1)) != ["phones"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the first requests get the stale list, never an error or a wait
    assert ids(feed(client, "nobody", limit=1)) == ["phones"]


def test_a_new_item_is_in_feeds_as_soon_as_it_is_done(client: TestClient, runtime: Runtime) -> None:
    runtime.settings.recommend_cache_s = 3600  # a cache that would otherwise serve the old answer for an hour
    assert "lamp" not in ids(feed(client, "newcomer", kind="product", limit=50))
    lamp = ingest.EventIn(id="lamp", kind="product", text="reading lamp with a warm light", metadata={"price": 35.0})
    with runtime.db.session_scope() as s:
        ingest.accept(s, events=[lamp], limits=ingest.Limits(max_events=1, max_text_chars=1000))
    assert run_batch(["lamp"])["done"] == 1
    assert "lamp" in ids(feed(client, "newcomer", kind="product", limit=50))


def test_prefill_reads_the_most_interacted_items_then_the_others_into_the_feeds_cache(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user, item in [("u1", "pan"), ("u2", "pan"), ("u1", "knife"), ("u3", "news-new")]:
        act(client, user, item, "view")
    recommender = runtime.recommender
    warmed: dict[str, int] = {}
    warm = recommender.store.warm
    monkeypatch.setattr(recommender.store, "warm", lambda name: warmed.setdefault(name, warm(name)))
    assert recommender.prefill(items=1) == 2  # the most interacted product and news item
    # each item collection's files were read into the page cache first (embedded store: some bytes)
    assert set(warmed) == {runtime.models.for_kind(k).collection for k in ("product", "news")}
    assert all(size > 0 for size in warmed.values()), warmed
    assert len(recommender.points) == 2
    items = len(_events())
    assert recommender.prefill(items=3) == 6 and len(recommender.points) == 6  # interacted ones first, then the newest
    assert recommender.prefill() == items and len(recommender.points) == items  # every item (embedded store)
    retrieved: list[str] = []
    get = recommender.points.get
    monkeypatch.setattr(recommender.points, "get", lambda name, ids: retrieved.extend(ids) or get(name, ids))
    fetch = recommender.points._fetch
    fetched: list[str] = []
    monkeypatch.setattr(recommender.points, "_fetch", lambda name, ids: fetched.extend(ids) or fetch(name, ids))
    read_in_sql: list[str] = []
    for name in ("neighbour_pairs", "popularity"):
        read = getattr(reads, name)
        monkeypatch.setattr(reads, name, lambda *a, _n=name, _r=read, **k: read_in_sql.append(_n) or _r(*a, **k))
    assert feed(client, "u9") and feed(client, "u1")  # a cold feed and one with a history
    assert retrieved and not fetched  # every candidate's point came from memory
    assert not read_in_sql  # and the profile items' neighbours and the candidates' popularity


def test_a_process_that_alone_writes_its_store_keeps_items_until_they_change(runtime: Runtime) -> None:
    """Embedded, every write goes through this process, which forgets what it changes (the tests
    of items sent again and deleted); another process's writes to a server reach it in ENTRY_TTL_S
    (neighbours and popularity: tests/integration/test_item_reads.py)."""
    assert runtime.recommender.points.ttl_s == math.inf
    served = runtime.settings.model_copy(update={"qdrant_url": "http://qdrant.example:6333"})
    recommender = Recommender(
        settings=served,
        store=runtime.store,
        models=runtime.models,
        sessions=runtime.db.session_scope,
        reads=runtime.db.read_scope,
    )
    assert recommender.points.ttl_s == ENTRY_TTL_S


def test_points_a_new_encoder_re_embeds_leave_the_feeds_cache(runtime: Runtime, encoder: Encoder) -> None:
    """The reindex's pages and its catch-up rewrite points outside a batch: the cache forgets them."""
    recommender = runtime.recommender
    assert recommender.prefill() == len(_events())
    collection = runtime.models.for_kind("product").collection
    with runtime.db.session_scope() as s:
        pan = s.get(Event, "pan")
        assert pan is not None
        runtime.reindexer._embed([pan], encoder, collection, record_version=False)
    assert len(recommender.points) == len(_events()) - 1
