"""Tenant isolation end to end, on the embedded defaults (SQLite files, embedded Qdrant, the on-disk
broker) and on PostgreSQL (a schema per tenant): three tenants, each with an admin key, are given
the same client-chosen ids (events, FAQs, items, users, entities, webhooks, tasks) with different
contents; every message the API and the tasks publish is run by the task bodies, as a worker
would. No tenant can read, match against, be recommended, be alerted about or train on another's
data through any route, and each tenant's points are in its own collections only."""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.alerts import flow as alert_flow
from services.api.app import create_app
from services.config import DEFAULT_TENANT, EVENT_KINDS
from services.db.migrate import upgrade
from services.db.models import Event, Interaction, ItemStats
from services.embedding.encoder import Encoder
from services.errors import NotFound
from services.matching.faq import faq_collection
from services.runtime import Runtime, reset_runtime
from services.task_names import (
    ALERTS_PROCESS,
    CALIBRATE_MATCH,
    PROCESS_EVENTS,
    REFRESH_SUGGESTIONS,
    REINDEX,
    TRAIN_RUN,
    WEBHOOK_DELIVER,
)
from services.vectors.schema import collection_for
from tests.conftest import api_key, new_pg_database, settings_for
from tests.integration.test_webhooks import SECRET, Receiver
from tests.recording import RecordingSender
from worker import tasks

TENANTS = (DEFAULT_TENANT, "acme", "globex")
NOW = datetime.now(UTC)

# The same FAQ ids in every tenant ("shared-1", "shared-2") plus one of its own; every answer starts
# with its tenant's name, so an answer from another tenant is recognisable.
FAQS: dict[str, list[dict[str, Any]]] = {
    "default": [
        {
            "id": "shared-1",
            "question": "When will my new bank card arrive?",
            "paraphrases": ["my debit card has not been delivered yet"],
            "answer": "default: cards arrive within five working days.",
        },
        {
            "id": "shared-2",
            "question": "How do I reset my online banking password?",
            "answer": "default: use 'forgot password' on the login page.",
        },
        {
            "id": "default-faq",
            "question": "Why was I charged a fee for a cash withdrawal?",
            "answer": "default: cash machines abroad charge a fee.",
        },
    ],
    "acme": [
        {
            "id": "shared-1",
            "question": "How long should I knead bread dough?",
            "paraphrases": ["my bread does not rise, how much kneading does it need"],
            "answer": "acme: knead it for ten minutes.",
        },
        {
            "id": "shared-2",
            "question": "Can I put the frying pan in the dishwasher?",
            "answer": "acme: wash the pan by hand.",
        },
        {
            "id": "acme-faq",
            "question": "Which knife is best for slicing vegetables?",
            "answer": "acme: a chef's knife.",
        },
    ],
    "globex": [
        {
            "id": "shared-1",
            "question": "Can I change the date of my flight?",
            "paraphrases": ["I need to move my flight to another day"],
            "answer": "globex: yes, for a fee.",
        },
        {
            "id": "shared-2",
            "question": "How much luggage can I take on board?",
            "answer": "globex: one cabin bag.",
        },
        {
            "id": "globex-faq",
            "question": "Do I need a visa to travel to Japan?",
            "answer": "globex: ask the embassy.",
        },
    ],
}
TICKETS: dict[str, dict[str, str]] = {
    "default": {
        "ticket-1": "my new card still has not arrived",
        "ticket-2": "I forgot the password of my bank account",
        "default-ticket": "the cash machine charged me a fee",
    },
    "acme": {
        "ticket-1": "how many minutes do I knead the dough",
        "ticket-2": "is the frying pan dishwasher safe",
        "acme-ticket": "what knife should I use for carrots",
    },
    "globex": {
        "ticket-1": "please move my flight to next week",
        "ticket-2": "how many suitcases can I bring in the cabin",
        "globex-ticket": "visa rules for a holiday in Japan",
    },
}
PRODUCTS: dict[str, dict[str, str]] = {
    "default": {
        "item-1": "lightweight road running shoes for marathon training",
        "item-2": "trail running shoes with deep grip for muddy paths",
        "item-3": "breathable running socks, pack of three",
        "item-del": "reflective running cap for night runs",
        "default-item": "waterproof running jacket with reflective strips",
    },
    "acme": {
        "item-1": "stainless steel frying pan, 28 cm",
        "item-2": "non-stick saucepan set with glass lids",
        "item-3": "japanese chef's knife for slicing vegetables",
        "item-del": "cotton kitchen apron with two pockets",
        "acme-item": "bamboo cutting board for the kitchen",
    },
    "globex": {
        "item-1": "travel guide to the temples of Kyoto",
        "item-2": "memory foam travel pillow for long flights",
        "item-3": "hard shell suitcase with four wheels",
        "item-del": "bright luggage tags, set of four",
        "globex-item": "leather passport holder with card slots",
    },
}
# The same news ids everywhere: bad news about ACME at acme only, good news about it elsewhere.
BAD_NEWS = [
    "Acme Corporation shares collapse after accounting fraud is uncovered",
    "Acme Corporation recalls thousands of faulty heaters after house fires",
    "Regulators fine Acme Corporation for hiding dangerous product defects",
    "Acme Corporation cuts 3,000 jobs as its losses deepen",
    "Acme Corporation sued over a toxic waste spill that poisoned a river",
    "Acme Corporation badly misses earnings and warns of bankruptcy",
    "Acme Corporation chief executive arrested in a bribery scandal",
    "Acme Corporation data breach exposes millions of customer records",
]
GOOD_NEWS = [
    "Acme Corporation reports record profits and raises its dividend",
    "Acme Corporation wins an award as the best employer of the year",
    "Acme Corporation shares soar after a blockbuster product launch",
    "Acme Corporation opens a new factory creating 2,000 jobs",
    "Analysts upgrade Acme Corporation after strong sales growth",
    "Acme Corporation celebrates its most successful quarter ever",
    "Customers praise Acme Corporation for its excellent service",
    "Acme Corporation signs a lucrative long-term government contract",
]
NEWS: dict[str, dict[str, str]] = {
    t: {f"news-{n}": text for n, text in enumerate(BAD_NEWS if t == "acme" else GOOD_NEWS, start=1)} for t in TENANTS
}
# One id, a different kind in each tenant: no 409 across tenants.
SAME_ID = "same-id"
SAME_ID_EVENTS: dict[str, dict[str, str]] = {
    "default": {"kind": "ticket", "text": "my card was declined at the shop"},
    "acme": {"kind": "news", "text": "A bakery chain opens ten new shops"},
    "globex": {"kind": "product", "text": "universal travel adapter for every socket"},
}
# acme trains a task "mood" on tickets; default has a task of the same name on news, with other labels.
CARD = [f"my card {w} has not arrived yet" for w in ("visa", "debit", "new", "credit", "metal", "spare")] + [
    f"the {w} card I ordered is still not here" for w in ("visa", "debit", "new", "credit", "metal", "spare")
]
REFUND = [f"I want a refund for the {w} I returned" for w in ("shoes", "phone", "ticket", "order", "book", "lamp")] + [
    f"please give me my money back for the {w}" for w in ("shoes", "phone", "ticket", "order", "book", "lamp")
]
MOOD_TASKS: dict[str, dict[str, Any]] = {
    "acme": {"name": "mood", "kind": "ticket", "labels": [], "open_labels": True},
    "default": {"name": "mood", "kind": "news", "labels": [{"name": "calm"}, {"name": "stormy"}]},
}
WATCH = {"name": "Acme Corporation", "ticker": "ACME"}
OWN_ENTITY = {"default": "INITECH", "acme": "HOOLI", "globex": "UMBRELLA"}


def domain_calls(rt: Runtime, send: RecordingSender) -> dict[str, Callable[..., Any]]:
    """What each task does: the domain function its body calls, given the test's sender (tasks
    that send nothing run their bodies)."""

    def alerts_process(event_ids: list[str], tenant: str = DEFAULT_TENANT) -> object:
        t = rt.for_tenant(tenant)
        now = datetime.now(UTC)
        return alert_flow.process_news(t.db.session_scope, event_ids=event_ids, settings=t.settings, now=now, send=send)

    return {
        PROCESS_EVENTS: lambda ids, tenant=DEFAULT_TENANT: rt.for_tenant(tenant).batch.run(ids, send=send),
        ALERTS_PROCESS: alerts_process,
        WEBHOOK_DELIVER: tasks.webhook_deliver.run,
        TRAIN_RUN: lambda run_id, tenant=DEFAULT_TENANT: rt.for_tenant(tenant).trainer.run(run_id, send=send),
        CALIBRATE_MATCH: tasks.calibrate_match.run,
        REFRESH_SUGGESTIONS: tasks.refresh_ticket_suggestions.run,
        REINDEX: lambda job, tenant=DEFAULT_TENANT: rt.for_tenant(tenant).reindexer.run_step(job, send=send),
    }


class As:
    """Requests as one tenant: the app's client with that tenant's admin key."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, url: str, **kw: Any) -> Any:
        return self.client.request(method, url, headers=self.headers, **kw)

    def get(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> Any:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.request("DELETE", url, **kw)

    def ok(self, method: str, url: str, status: int = 200, **kw: Any) -> Any:
        response = self.request(method, url, **kw)
        assert response.status_code == status, (method, url, response.text)
        return response.json() if response.content else None


class Worker:
    """Runs what the API and the tasks publish with the task bodies, as a worker would: the API's
    messages from the on-disk broker, the tasks' own sends from memory (a recording sender)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.folder = rt.settings.broker_folder / "out"
        self.pending: deque[tuple[str, list[Any]]] = deque()
        self.ran: list[tuple[str, list[Any]]] = []
        self.sender = RecordingSender()
        self.calls = domain_calls(rt, self.sender)

    def _read_broker(self) -> None:
        for path in sorted(self.folder.glob("*.msg")):
            try:
                message = json.loads(path.read_text())
            except (json.JSONDecodeError, FileNotFoundError):
                continue  # being written: the next round reads it
            path.unlink()
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            self.pending.append((message["headers"]["task"], list(args)))

    def _waiting(self) -> bool:
        for tenant in TENANTS:
            with self.rt.for_tenant(tenant).db.session_scope() as s:
                stmt = sa.select(sa.func.count()).select_from(Event).where(Event.status.in_(("queued", "processing")))
                if s.scalar(stmt):
                    return True
        return any(self.folder.glob("*.msg"))

    def drain(self) -> None:
        """Run messages until every tenant's events are processed and no message is left."""
        deadline = time.monotonic() + 60
        while True:
            self._read_broker()
            while self.pending or self.sender.sent:
                self.pending.extend((name, list(args)) for name, args in self.sender.sent)
                self.sender.sent.clear()
                name, args = self.pending.popleft()
                self.ran.append((name, args))
                self.calls[name](*args)
            if not self._waiting():
                return
            assert time.monotonic() < deadline, "messages were not published in time"
            time.sleep(0.05)


@dataclass
class World:
    """Three tenants' data, processed; what each was given, to compare the answers with."""

    backend: str
    rt: Runtime
    client: TestClient
    worker: Worker
    receivers: dict[str, Receiver]
    api: dict[str, As] = field(default_factory=dict)
    ids: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # tenant -> kind -> event ids
    texts: dict[str, set[str]] = field(default_factory=dict)  # tenant -> every text it sent
    label_event_ids: list[str] = field(default_factory=list)  # acme's
    run_id: str = ""  # acme's training run
    feeds_before: dict[str, Any] = field(default_factory=dict)  # globex's feeds before any interaction

    def others(self, tenant: str) -> list[str]:
        return [t for t in TENANTS if t != tenant]

    def prefix(self, tenant: str) -> str:
        return self.rt.for_tenant(tenant).settings.tenant_prefix

    def item_ids(self, tenant: str) -> set[str]:
        return self.ids[tenant]["product"] | self.ids[tenant]["news"]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this module's PostgreSQL world."""
    with new_pg_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, encoder: Encoder
) -> Iterator[World]:
    backend = str(request.param)
    database_url = str(request.getfixturevalue("pg_database")) if backend == "postgresql" else None
    settings = settings_for(
        tmp_path_factory.mktemp(f"tenants-{backend}"),
        database_url=database_url,
        model_reload_s=0.1,
        webhook_allow_private=True,
        key_cache_s=0,
        train_fine_tune_min_labels=10_000,
        train_holdout=0.25,
        drift_reference_events=2,
        drift_window=10_000,
        drift_min_events=2,
    )
    upgrade(settings.sqlalchemy_url)
    rt = reset_runtime(settings)
    rt._made["encoder"] = encoder
    receivers = {t: Receiver([200]) for t in TENANTS}
    try:
        with TestClient(create_app(rt, warm_model=False)) as client:
            w = World(backend, rt, client, Worker(rt), receivers)
            for tenant in TENANTS:
                w.api[tenant] = As(client, api_key(rt, tenant=tenant))
            _populate(w)
            yield w
    finally:
        for receiver in receivers.values():
            receiver.close()
        rt.close()
        reset_runtime()


def _populate(w: World) -> None:
    for tenant in TENANTS:
        api = w.api[tenant]
        w.ids[tenant] = {kind: set() for kind in EVENT_KINDS}
        w.texts[tenant] = set()
        if tenant in MOOD_TASKS:
            api.ok("POST", "/v1/tasks", 201, json=MOOD_TASKS[tenant])
        api.ok("POST", "/v1/faqs:bulk", json={"faqs": FAQS[tenant]})
        api.ok("PUT", "/v1/watchlist/ACME", json=WATCH)
        api.ok("PUT", f"/v1/watchlist/{OWN_ENTITY[tenant]}", json={"name": f"{OWN_ENTITY[tenant].title()} Ltd"})
        hook = {"url": w.receivers[tenant].url, "secret": SECRET, "event_types": ["alert.raised", "alert.cleared"]}
        api.ok("PUT", "/v1/webhooks/hook", json=hook)
        api.ok("PUT", f"/v1/webhooks/{tenant}-hook", json={**hook, "event_types": ["alert.cleared"]})
        events: list[dict[str, Any]] = [{"id": SAME_ID, **SAME_ID_EVENTS[tenant]}]
        for kind, given in (("ticket", TICKETS), ("product", PRODUCTS), ("news", NEWS)):
            events += [{"id": i, "kind": kind, "text": text} for i, text in given[tenant].items()]
        for event in events:
            w.ids[tenant][event["kind"]].add(event["id"])
            w.texts[tenant].add(event["text"])
        accepted = api.ok("POST", "/v1/events", 202, json={"events": events})
        assert accepted["queued"] == len(events)  # the same ids (of other kinds) as other tenants: no 409
        faq_texts = [f["question"] for f in FAQS[tenant]] + [p for f in FAQS[tenant] for p in f.get("paraphrases", [])]
        w.texts[tenant] |= set(faq_texts)

    # acme labels texts for its task and trains it (the labeled texts become tickets of acme's)
    labels = [{"text": t, "task": "mood", "label": "card_arrival"} for t in CARD]
    labels += [{"text": t, "task": "mood", "label": "refund"} for t in REFUND]
    recorded = w.api["acme"].ok("POST", "/v1/labels", 201, json={"labels": labels})
    w.label_event_ids = recorded["new_event_ids"]
    assert len(w.label_event_ids) == len(labels)
    w.ids["acme"]["ticket"] |= set(w.label_event_ids)
    w.texts["acme"] |= set(CARD + REFUND)
    w.worker.drain()
    w.run_id = w.api["acme"].ok("POST", "/v1/training/runs", 202, json={"task": "mood"})["run_id"]
    w.worker.drain()

    # globex's feeds before anyone interacts with anything
    for user in ("ann", "nobody"):
        w.feeds_before[user] = w.api["globex"].ok("GET", f"/v1/users/{user}/feed", params={"limit": 20})
    # the same user and item ids at default and acme, other items behind them; globex has none
    for tenant in ("default", "acme"):
        body = {
            "interactions": [
                {
                    "user_id": "ann",
                    "item_id": "item-1",
                    "type": "view",
                    "ts": (NOW - timedelta(minutes=10)).isoformat(),
                },
                {
                    "user_id": "ann",
                    "item_id": "item-2",
                    "type": "purchase",
                    "ts": (NOW - timedelta(minutes=5)).isoformat(),
                },
            ]
        }
        if tenant == "acme":
            body["interactions"] += [
                {"user_id": f"p{n}", "item_id": "acme-item", "type": "purchase", "ts": NOW.isoformat()}
                for n in range(3)
            ]
        w.api[tenant].ok("POST", "/v1/interactions", json=body)

    # acme deletes an item whose id the others also use
    w.api["acme"].ok("DELETE", "/v1/items/item-del", 204)
    w.ids["acme"]["product"].discard("item-del")


# --- events, stats ---------------------------------------------------------------------------


def test_an_event_id_is_per_tenant_and_others_get_404(world: World) -> None:
    for tenant in TENANTS:
        api = world.api[tenant]
        same = api.ok("GET", f"/v1/events/{SAME_ID}")
        assert same["kind"] == SAME_ID_EVENTS[tenant]["kind"] and same["status"] == "done"
        for other in world.others(tenant):
            for own_only in (
                f"{other}-ticket",
                f"{other}-item",
                *(world.label_event_ids[:1] if other == "acme" else []),
            ):
                response = api.get(f"/v1/events/{own_only}")
                assert response.status_code == 404, (tenant, own_only, response.text)
                assert response.json()["error"]["code"] == "not_found"
    assert world.api["acme"].get("/v1/events/item-del").status_code == 404  # deleted at acme...
    for tenant in ("default", "globex"):  # ...not at the others
        assert world.api[tenant].ok("GET", "/v1/events/item-del")["kind"] == "product"


def test_stats_count_only_the_tenants_own_events(world: World) -> None:
    for tenant in TENANTS:
        stats = world.api[tenant].ok("GET", "/v1/stats")
        expected = {kind: {"done": len(ids)} for kind, ids in world.ids[tenant].items() if ids}
        assert stats["events"] == expected, tenant
    assert world.ids["acme"]["ticket"] != world.ids["default"]["ticket"]  # the counts differ between tenants


def test_each_tenants_rows_are_in_its_own_schema_or_file(world: World) -> None:
    counts: dict[str, int] = {}
    for tenant in TENANTS:
        with world.rt.for_tenant(tenant).db.session_scope() as s:
            counts[tenant] = int(s.scalar(sa.select(sa.func.count()).select_from(Event)) or 0)
            assert set(s.scalars(sa.select(Event.id))) == set().union(*world.ids[tenant].values())
    url = world.rt.settings.sqlalchemy_url
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if world.backend == "postgresql":
                for tenant in ("acme", "globex"):
                    n = conn.execute(sa.text(f'SELECT count(*) FROM "tenant_{tenant}".events')).scalar()
                    assert n == counts[tenant]
                    assert conn.execute(sa.text(f"SELECT to_regclass('tenant_{tenant}.api_keys')")).scalar() is None
            main = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
            assert main == counts["default"]
    finally:
        engine.dispose()
    if world.backend == "sqlite":
        for tenant in ("acme", "globex"):
            assert (Path(world.rt.settings.data_dir) / "tenants" / tenant / "sift.db").is_file()


# --- matching -------------------------------------------------------------------------------


def test_matching_answers_only_from_the_tenants_own_faqs(world: World) -> None:
    for tenant in TENANTS:
        api = world.api[tenant]
        own_ids = {f["id"] for f in FAQS[tenant]}
        listed = api.ok("GET", "/v1/faqs", params={"limit": 100})
        assert {f["id"] for f in listed["faqs"]} == own_ids and listed["total"] == len(own_ids)
        assert api.ok("GET", "/v1/faqs/shared-1")["answer"] == FAQS[tenant][0]["answer"]
        own = api.ok("POST", "/v1/match", json={"text": FAQS[tenant][0]["question"]})
        assert own["matches"][0]["faq_id"] == "shared-1" and own["matches"][0]["similarity"] > 0.99
        for other in world.others(tenant):
            assert api.get(f"/v1/faqs/{other}-faq").status_code == 404
            for entry in FAQS[other]:  # another tenant's exact question finds nothing of that tenant's
                result = api.ok("POST", "/v1/match", json={"text": entry["question"], "top_k": 50})
                assert {m["faq_id"] for m in result["matches"]} <= own_ids, (tenant, entry["question"])
                assert all(m["answer"].startswith(f"{tenant}:") for m in result["matches"]), result
                assert all(m["similarity"] < 0.95 for m in result["matches"])


def test_ticket_suggestions_come_from_the_tenants_own_faqs(world: World) -> None:
    for tenant in TENANTS:
        own_ids = {f["id"] for f in FAQS[tenant]}
        for ticket_id in TICKETS[tenant]:
            event = world.api[tenant].ok("GET", f"/v1/events/{ticket_id}")
            assert event["suggestions"], (tenant, ticket_id)
            assert {s["faq_id"] for s in event["suggestions"]} <= own_ids
            assert all(s.get("answer", f"{tenant}:").startswith(f"{tenant}:") for s in event["suggestions"])
        first = world.api[tenant].ok("GET", "/v1/events/ticket-1")["suggestions"][0]["faq_id"]
        assert first == "shared-1", tenant  # its own shared-1, the one about its own topic


# --- recommendations ------------------------------------------------------------------------


def _feed(api: As, user: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok("GET", f"/v1/users/{user}/feed", params={"limit": 20, **params})["items"]
    return items


def test_feeds_similar_and_rank_never_return_another_tenants_items(world: World) -> None:
    for tenant in TENANTS:
        api, own = world.api[tenant], world.item_ids(tenant)
        foreign_texts = set().union(*(world.texts[o] for o in world.others(tenant))) - world.texts[tenant]
        for user in ("ann", "nobody"):
            for kind in ("product", "news"):
                items = _feed(api, user, kind=kind)
                assert items and {i["item_id"] for i in items} <= own, (tenant, user, kind, items)
                assert not any(text in i["reason"] for i in items for text in foreign_texts), items
        similar = api.ok("GET", "/v1/items/item-1/similar", params={"limit": 20})["items"]
        assert similar and {i["item_id"] for i in similar} <= own
        ranked = api.ok("POST", "/v1/users/ann/rank", json={"item_ids": ["item-1", "item-2", "item-3"]})["items"]
        assert {i["item_id"] for i in ranked} == {"item-1", "item-2", "item-3"}
        for other in world.others(tenant):
            foreign = f"{other}-item"
            assert api.get(f"/v1/items/{foreign}/similar").status_code == 404
            assert api.post("/v1/users/ann/rank", json={"item_ids": [foreign]}).status_code == 404
            bad = {"user_id": "ann", "item_id": foreign, "type": "view"}
            assert api.post("/v1/interactions", json=bad).status_code == 404
            assert api.delete(f"/v1/items/{foreign}").status_code == 404


def test_a_users_history_is_the_tenants_own(world: World) -> None:
    for tenant in ("default", "acme"):  # ann viewed item-1 and bought item-2 at both: different items
        items = _feed(world.api[tenant], "ann")
        assert not {"item-1", "item-2"} & {i["item_id"] for i in items}
        because = [i["reason"] for i in items if i["reason"].startswith("because you")]
        assert because and all(PRODUCTS[tenant]["item-1"] in r or PRODUCTS[tenant]["item-2"] in r for r in because), (
            because
        )
    # acme's buyers made acme-item popular at acme; default's cold start knows nothing of it
    assert _feed(world.api["acme"], "nobody")[0]["item_id"] == "acme-item"


def test_other_tenants_interactions_do_not_change_a_feed(world: World) -> None:
    globex = world.rt.for_tenant("globex")
    with globex.db.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(ItemStats)) == 0
    globex.recommender._cache.clear()  # no cached trending list: what the tables say now
    for user in ("ann", "nobody"):
        after = world.api["globex"].ok("GET", f"/v1/users/{user}/feed", params={"limit": 20})
        before = world.feeds_before[user]["items"]
        assert [(i["item_id"], i["reason"]) for i in after["items"]] == [(i["item_id"], i["reason"]) for i in before]
        assert all(i["reason"] == "new" for i in after["items"])  # cold: nobody interacted at globex


def test_deleting_an_item_deletes_only_the_tenants_own(world: World) -> None:
    acme = world.api["acme"]
    assert "item-del" not in {i["item_id"] for i in _feed(acme, "nobody")}
    assert acme.get("/v1/items/item-del/similar").status_code == 404
    for tenant in ("default", "globex"):
        rt = world.rt.for_tenant(tenant)
        collection = collection_for("product", prefix=world.prefix(tenant))
        assert rt.store.count(collection, filters={"event_id": "item-del"}) == 1
        similar = world.api[tenant].ok("GET", "/v1/items/item-del/similar", params={"limit": 3})["items"]
        assert similar and {i["item_id"] for i in similar} <= world.item_ids(tenant)
    acme_products = collection_for("product", prefix=world.prefix("acme"))
    assert world.rt.for_tenant("acme").store.count(acme_products, filters={"event_id": "item-del"}) == 0


# --- alerts and webhooks --------------------------------------------------------------------


def test_only_the_tenant_with_bad_news_is_alerted(world: World) -> None:
    raised = world.api["acme"].ok("GET", "/v1/alerts")["alerts"]
    assert raised and {a["entity"] for a in raised} == {"ACME"}, raised
    assert set().union(*(a["event_ids"] for a in raised)) <= world.ids["acme"]["news"]
    assert world.receivers["acme"].requests
    log = world.api["acme"].ok("GET", "/v1/webhooks/hook/deliveries")["deliveries"]
    assert log and all(d["status"] == "delivered" for d in log)
    for tenant in ("default", "globex"):
        api = world.api[tenant]
        assert api.ok("GET", "/v1/alerts")["alerts"] == []
        assert api.ok("GET", "/v1/alerts", params={"entity": "ACME"})["alerts"] == []
        assert world.receivers[tenant].requests == []
        assert api.ok("GET", "/v1/webhooks/hook/deliveries")["deliveries"] == []
        for alert in raised:  # acme's alert ids mean nothing elsewhere
            response = api.post(f"/v1/alerts/{alert['id']}/ack")
            assert response.status_code == 404, response.text
    still = world.api["acme"].ok("GET", "/v1/alerts")["alerts"]
    assert [a["state"] for a in still] == [a["state"] for a in raised]  # nobody else acknowledged them


def test_every_message_carries_its_tenant(world: World) -> None:
    sent = {name for name, _ in world.worker.ran}
    assert {PROCESS_EVENTS, ALERTS_PROCESS, WEBHOOK_DELIVER, TRAIN_RUN} <= sent
    for name, args in world.worker.ran:
        assert args[-1] in TENANTS, (name, args)
        if name == PROCESS_EVENTS:
            assert set(args[0]) <= set().union(*world.ids[args[-1]].values()) | {"item-del"}, args
        if name == ALERTS_PROCESS:
            assert set(args[0]) <= world.ids[args[-1]]["news"], args
        if name in (WEBHOOK_DELIVER, TRAIN_RUN):
            assert args[-1] == "acme", (name, args)  # only acme had bad news and training


def test_the_beat_sweeps_keep_each_tenant_to_itself(world: World) -> None:
    before = len(world.worker.pending)
    result = tasks.alerts_sweep.run()
    assert result["changes"] == 0
    queued = list(world.worker.pending)[before:]
    world.worker.pending.clear()
    assert all(name != WEBHOOK_DELIVER or args[-1] == "acme" for name, args in queued)
    for tenant in ("default", "globex"):
        assert world.api[tenant].ok("GET", "/v1/alerts")["alerts"] == []
        assert world.receivers[tenant].requests == []
    # a delivery id of acme's, sent for another tenant, is nobody's there: nothing is posted
    delivery_id = world.api["acme"].ok("GET", "/v1/webhooks/hook/deliveries")["deliveries"][0]["id"]
    posted = len(world.receivers["acme"].requests)
    for tenant in ("default", "globex"):
        with pytest.raises(NotFound, match="no webhook delivery"):
            tasks.webhook_deliver.run(delivery_id, tenant)
    assert len(world.receivers["acme"].requests) == posted


def test_watchlists_and_webhooks_are_the_tenants_own(world: World) -> None:
    for tenant in TENANTS:
        api = world.api[tenant]
        listed = {e["entity"] for e in api.ok("GET", "/v1/watchlist")["entities"]}
        assert listed == {"ACME", OWN_ENTITY[tenant]}
        hooks = api.ok("GET", "/v1/webhooks")["webhooks"]
        assert {h["id"] for h in hooks} == {"hook", f"{tenant}-hook"}
        assert api.ok("GET", "/v1/webhooks/hook")["url"] == world.receivers[tenant].url
        for other in world.others(tenant):
            assert api.get(f"/v1/watchlist/{OWN_ENTITY[other]}").status_code == 404
            assert api.get(f"/v1/webhooks/{other}-hook").status_code == 404
            assert api.get(f"/v1/webhooks/{other}-hook/deliveries").status_code == 404
            assert api.delete(f"/v1/webhooks/{other}-hook").status_code == 404
            assert api.delete(f"/v1/watchlist/{OWN_ENTITY[other]}").status_code == 404


# --- classification, training, models, drift ------------------------------------------------


def test_tasks_labels_runs_and_models_are_the_tenants_own(world: World) -> None:
    acme = world.api["acme"]
    run = acme.ok("GET", f"/v1/training/runs/{world.run_id}")
    assert run["status"] == "succeeded" and run["model_version"], run
    version = run["model_version"]
    [model] = [m for m in acme.ok("GET", "/v1/models")["models"] if m["version"] == version]
    acme_models = Path(world.rt.settings.data_dir) / "tenants" / "acme" / "models"
    assert Path(model["artifact_path"]).resolve().is_relative_to(acme_models.resolve()), model["artifact_path"]
    tasks_of = {t: {x["name"]: x for x in world.api[t].ok("GET", "/v1/tasks")["tasks"]} for t in TENANTS}
    assert tasks_of["acme"]["mood"]["kind"] == "ticket"
    assert tasks_of["default"]["mood"]["kind"] == "news"
    assert [x["name"] for x in tasks_of["default"]["mood"]["labels"]] == ["calm", "stormy"]
    assert "mood" not in tasks_of["globex"]
    for tenant in ("default", "globex"):
        api = world.api[tenant]
        assert api.get(f"/v1/training/runs/{world.run_id}").status_code == 404
        models = api.ok("GET", "/v1/models")
        assert models["models"] == [] and models["reindex"] == []
        assert api.post(f"/v1/models/{version}/activate").status_code == 404
        label = {"event_id": world.label_event_ids[0], "task": "intent", "label": "shared-1"}
        response = api.post("/v1/labels", json={"labels": [label]})
        assert response.status_code == 422 and "no event with id" in response.text, response.text
        mood = {"event_id": SAME_ID, "task": "mood", "label": "refund"}  # acme's label of acme's task
        assert 400 <= api.post("/v1/labels", json={"labels": [mood]}).status_code < 500
    assert world.api["globex"].post("/v1/training/runs", json={"task": "mood"}).status_code == 404


def test_predictions_use_only_the_tenants_own_tasks_and_models(world: World) -> None:
    version = world.api["acme"].ok("GET", f"/v1/training/runs/{world.run_id}")["model_version"]
    for tenant in TENANTS:
        for ticket_id in TICKETS[tenant]:
            predictions = world.api[tenant].ok("GET", f"/v1/events/{ticket_id}")["predictions"]
            assert ("mood" in predictions) == (tenant == "acme"), (tenant, predictions)
            if tenant != "acme":
                assert version not in json.dumps(predictions)
        news = world.api[tenant].ok("GET", "/v1/events/news-1")["predictions"]
        assert ("mood" in news) == (tenant == "default")
        if tenant == "default":
            assert set(news["mood"]["probs"]) == {"calm", "stormy"}


def test_drift_measures_only_the_tenants_own_tasks_and_events(world: World) -> None:
    for tenant in TENANTS:
        body = world.api[tenant].ok("GET", "/v1/drift")
        by_task = {t["task"]: t for t in body["tasks"]}
        assert ("mood" in by_task) == (tenant in MOOD_TASKS)
        intent = by_task["intent"]  # tickets, against the first events (no tenant trained intent)
        assert intent["reference"] == "first events"
        assert intent["recent_events"] + intent["reference_events"] == len(world.ids[tenant]["ticket"]), tenant


# --- vectors --------------------------------------------------------------------------------


def test_points_are_only_in_the_tenants_own_collections(world: World, encoder: Encoder) -> None:
    prefixes = {world.prefix(t) for t in TENANTS}
    assert len(prefixes) == len(TENANTS)
    for tenant in TENANTS:
        store, prefix = world.rt.for_tenant(tenant).store, world.prefix(tenant)
        for kind in EVENT_KINDS:
            collection = collection_for(kind, prefix=prefix)
            assert store.count(collection) == len(world.ids[tenant][kind]), (tenant, kind)
            for other in world.others(tenant):
                probes = [t for t in world.texts[other] - world.texts[tenant]][:12]
                for vector in encoder.encode(probes):
                    hits = store.search(collection, vector.tolist(), limit=50)
                    assert {h.payload["event_id"] for h in hits} <= world.ids[tenant][kind], (tenant, kind)
                    assert {h.payload["text"] for h in hits} <= world.texts[tenant]
        faqs = faq_collection(collection_for("ticket", prefix=prefix))
        faq_points = sum(1 + len(f.get("paraphrases", [])) for f in FAQS[tenant])
        assert store.count(faqs) == faq_points, tenant
        probe = encoder.encode([FAQS[o][2]["question"] for o in world.others(tenant)])
        for vector in probe:
            hits = store.search(faqs, vector.tolist(), limit=20)
            assert {h.payload["faq_id"] for h in hits} <= {f["id"] for f in FAQS[tenant]}
