"""The worker side of tenancy, on SQLite files and on PostgreSQL schemas: a `process_events`
message claims (and tops its batch up with) only its tenant's events, even when another tenant has
queued events with the same ids; the beat sweep re-sends each tenant's lost events in messages
that carry that tenant, and running those messages processes each tenant's own events."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.config import DEFAULT_TENANT
from services.db.models import Event
from services.embedding.encoder import Encoder
from services.enqueue import Enqueuer
from services.events import accept as ingest
from services.events.group_writer import GroupWriter
from services.runtime import Runtime
from services.task_names import ALERTS_PROCESS, PROCESS_EVENTS
from services.vectors.schema import collection_for
from tests.conftest import open_runtime, settings_for
from tests.recording import RecordingSender, run_batch
from worker import tasks

LIMITS = ingest.Limits(max_events=100, max_text_chars=1000)
EVENTS: dict[str, list[tuple[str, str, str]]] = {  # tenant -> (id, kind, text)
    DEFAULT_TENANT: [
        ("e1", "ticket", "my card has not arrived"),
        ("e2", "ticket", "I forgot my password"),
        ("n1", "news", "Central bank raises interest rates"),
        ("default-only", "ticket", "the cash machine kept my card"),
    ],
    "acme": [
        ("e1", "ticket", "the frying pan handle broke"),
        ("e2", "ticket", "my saucepan arrived dented"),
        ("n1", "news", "Bakery chain opens ten new shops"),
        ("acme-only", "ticket", "the knife is not sharp"),
    ],
}


class FakeBroker:
    """A Celery app's send_task, recording (task name, args)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, args: list[Any], **_: Any) -> Any:
        self.sent.append((name, args))
        return type("Sent", (), {"id": f"task-{len(self.sent)}"})()


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    database_url = str(request.getfixturevalue("pg_url")) if request.param == "postgresql" else None
    with open_runtime(
        settings_for(data_dir, database_url=database_url, sweep_after_s=0.01, model_reload_s=60), encoder
    ) as rt:
        for tenant in ("acme", "globex"):
            rt.create_tenant(tenant)
        for tenant, events in EVENTS.items():
            with rt.for_tenant(tenant).db.session_scope() as s:
                accepted = [ingest.EventIn(id=i, kind=k, text=t) for i, k, t in events]  # type: ignore[arg-type]
                assert len(ingest.accept(s, events=accepted, limits=LIMITS).queued) == len(events)
        yield rt


@pytest.fixture
def sent() -> RecordingSender:
    """What the batches send by name (the alerts queue), instead of the broker."""
    return RecordingSender()


def statuses(rt: Runtime, tenant: str) -> dict[str, str]:
    with rt.for_tenant(tenant).db.session_scope() as s:
        return {row.id: row.status for row in s.execute(sa.select(Event.id, Event.status))}


def points(rt: Runtime, tenant: str, kind: str) -> int:
    tenant_rt = rt.for_tenant(tenant)
    return tenant_rt.store.count(collection_for(kind, prefix=tenant_rt.settings.tenant_prefix))


def test_a_message_claims_only_its_tenants_events(runtime: Runtime, sent: RecordingSender) -> None:
    # The message of acme names e1 only: the batch tops up from acme's backlog, never default's.
    result = run_batch(["e1"], tenant="acme", send=sent)
    assert result == {"done": 4, "failed": 0}
    assert set(statuses(runtime, "acme").values()) == {"done"}
    assert set(statuses(runtime, DEFAULT_TENANT).values()) == {"queued"}
    assert (points(runtime, "acme", "ticket"), points(runtime, "acme", "news")) == (3, 1)
    assert (points(runtime, DEFAULT_TENANT, "ticket"), points(runtime, DEFAULT_TENANT, "news")) == (0, 0)
    assert sent.sent == [(ALERTS_PROCESS, (["n1"], "acme"))]  # its news go on to acme's alerts

    assert run_batch(["e1", "e2"], tenant="acme", send=sent) == {"done": 0, "failed": 0}  # a duplicate: no-op
    assert set(statuses(runtime, DEFAULT_TENANT).values()) == {"queued"}
    with runtime.db.session_scope() as s:  # nothing of default's was touched (no attempt counted)
        assert set(s.scalars(sa.select(Event.attempts))) == {0}

    assert run_batch(["e1"], send=sent) == {"done": 4, "failed": 0}  # an older message: the default tenant
    assert set(statuses(runtime, DEFAULT_TENANT).values()) == {"done"}
    assert points(runtime, DEFAULT_TENANT, "ticket") == 3 and points(runtime, "acme", "ticket") == 3
    assert sent.sent[-1] == (ALERTS_PROCESS, (["n1"], DEFAULT_TENANT))
    acme = runtime.for_tenant("acme")
    hit = acme.store.retrieve(
        collection_for("ticket", prefix=acme.settings.tenant_prefix), [ingest.point_id_for("e1", tenant=acme.tenant)]
    )
    assert hit[0].payload["text"] == "the frying pan handle broke"  # acme's e1, not overwritten by default's


def test_the_sweep_resends_each_tenants_events_with_its_tenant(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = FakeBroker()
    monkeypatch.setattr(tasks, "Enqueuer", lambda _app, batch_size: Enqueuer(broker, batch_size=batch_size))  # type: ignore[arg-type]
    time.sleep(0.05)  # past SIFT_SWEEP_AFTER_S: every queued event's message counts as lost
    assert tasks.sweep.run() == 8
    by_tenant = {args[1]: sorted(args[0]) for name, args in broker.sent if name == PROCESS_EVENTS}
    assert len(broker.sent) == 2 and by_tenant == {
        tenant: sorted(i for i, _, _ in events) for tenant, events in EVENTS.items()
    }  # globex has nothing queued: no message

    sent = RecordingSender()
    for name, args in broker.sent:  # what a worker does with them
        assert name == PROCESS_EVENTS
        assert run_batch(args[0], tenant=args[1], send=sent) == {"done": 4, "failed": 0}
    for tenant in EVENTS:
        assert set(statuses(runtime, tenant).values()) == {"done"}
    assert statuses(runtime, "globex") == {}
    assert sorted(args[-1] for args in sent.named(ALERTS_PROCESS)) == sorted(EVENTS)
    broker.sent.clear()
    time.sleep(0.05)
    assert tasks.sweep.run() == 0 and broker.sent == []  # all done: nothing to re-send anywhere


def test_the_beat_visits_every_tenant(runtime: Runtime) -> None:
    assert set(tasks.train_check.run()) == {DEFAULT_TENANT, "acme", "globex"}
    assert tasks.alerts_sweep.run() == {"changes": 0, "deliveries_sent": 0}


def test_one_group_of_the_writer_commits_each_tenants_requests_in_its_own_database(runtime: Runtime) -> None:
    queued: list[tuple[str, list[str]]] = []
    writer = GroupWriter(on_queued=lambda tenant, ids: queued.append((tenant, sorted(ids))))
    gate = threading.Event()
    write = writer._write
    groups: list[list[str]] = []

    def held(group: list[Any]) -> None:  # the first write waits, so the next requests form one group
        groups.append([db.tenant for db, _, _ in group])
        if len(groups) == 1:
            assert gate.wait(10)
        write(group)

    writer._write = held  # type: ignore[method-assign]
    # the same ids, a different kind in each tenant (no 409 across tenants)
    kinds = {DEFAULT_TENANT: "ticket", "acme": "news", "globex": "product"}

    def submit(tenant: str, ids: list[str]) -> Any:
        events = [ingest.EventIn(id=i, kind=kinds[tenant], text=f"{tenant} says {i}") for i in ids]  # type: ignore[arg-type]
        return writer.submit(runtime.for_tenant(tenant).db, ingest.prepare(events=events, limits=LIMITS))

    try:
        futures = [submit(DEFAULT_TENANT, ["w0"])]
        deadline = time.monotonic() + 10
        while not groups and time.monotonic() < deadline:
            time.sleep(0.01)
        futures += [submit(t, ["w1", "w2"]) for t in ("acme", DEFAULT_TENANT, "globex")] + [submit("acme", ["w3"])]
        gate.set()
        results = [f.result(timeout=10) for f in futures]
    finally:
        writer.close()
    assert [r.queued for r in results] == [["w0"], ["w1", "w2"], ["w1", "w2"], ["w1", "w2"], ["w3"]]
    assert groups[0] == [DEFAULT_TENANT] and sorted(map(sorted, groups[1:])) == [
        ["acme", "acme"],
        ["default"],
        ["globex"],
    ]
    assert sorted(queued) == sorted(
        [
            (DEFAULT_TENANT, ["w0"]),
            ("acme", ["w1", "w2", "w3"]),
            (DEFAULT_TENANT, ["w1", "w2"]),
            ("globex", ["w1", "w2"]),
        ]
    )
    for tenant, kind in kinds.items():
        with runtime.for_tenant(tenant).db.session_scope() as s:
            rows = {r.id: (r.kind, r.text) for r in s.execute(sa.select(Event.id, Event.kind, Event.text))}
        written = {i: v for i, v in rows.items() if i.startswith("w")}
        assert all(v == (kind, f"{tenant} says {i}") for i, v in written.items()), (tenant, written)
    assert set(statuses(runtime, "acme")) >= {"w1", "w2", "w3"} and "w0" not in statuses(runtime, "acme")
