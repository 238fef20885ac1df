"""Faults while events are being ingested: through the real API (uvicorn, in this process) into a
real Celery prefork worker and a beat (child processes), on a PostgreSQL and a Redis of the test's
own (tests/private_servers.py: the machine's shared servers are never touched) and embedded Qdrant.

- sigkill: the worker's pool child is SIGKILLed in the middle of a batch (the worker forks a new
  one); later the whole worker (its process group) is SIGKILLed and a new worker is started;
- redis: Redis is killed and started again, without persistence: every message it held is lost;
- postgres: PostgreSQL stops (immediate: a crash to its clients) and starts again on the same data;
- vectors: the vector store is down for a while (SIFT_VECTOR_FAULT_FILE, services/vectors/faults.py).

A producer sends every event with its own id and re-sends a refused request (503, no connection)
until it is accepted, as a client should. Afterwards every accepted event is `done`, once: one row
each and no other row, one point each and no other point in Qdrant, the entity links of every news
event recorded; news about watched companies raised alerts, one per company and rule, and the
webhook receiver got each of their deliveries, with no idempotency key twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from services.api.app import create_app
from services.db.migrate import upgrade
from services.db.models import Alert, EntityLink, Event, WebhookDelivery
from services.db.session import Database
from services.errors import NotFound, Transient
from services.events.accept import point_id_for
from services.runtime import Runtime
from services.vectors import open_store
from services.vectors.schema import collection_for
from tests.conftest import api_key, settings_for
from tests.private_servers import PrivatePostgres, PrivateRedis, free_port

EVENTS = 300  # after the warm-up request
PER_REQUEST = 10
PACE_S = 0.2  # between requests: the faults land while events still arrive
ENTITIES = ("ACME", "GLOBEX")
TENANT = "faults"
SECRET = "fault-test-webhook-secret"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres()
    except RuntimeError as exc:  # no server binaries on this machine
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.close()


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 200 and counts each idempotency key."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        lock = threading.Lock()
        keys = self.keys

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    keys[self.headers.get("X-Sift-Idempotency-Key", "")] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def event(i: int) -> dict[str, Any]:
    """Every third event is bad news about a watched company; the others are tickets."""
    if i % 3:
        return {"id": f"ev-{i}", "kind": "ticket", "text": f"I lost my card number {i}, what do I do now?"}
    entity = ENTITIES[i // 3 % len(ENTITIES)]
    text = f"{entity} shares collapse after fraud charges; terrible losses and angry investors ({i})"
    return {"id": f"ev-{i}", "kind": "news", "text": text, "entities": [entity]}


class Producer(threading.Thread):
    """Sends events [first, last) in requests of PER_REQUEST, re-sending a refused request (503 or
    no connection) with the same ids until it is accepted."""

    def __init__(self, base_url: str, key: str, first: int, last: int) -> None:
        super().__init__(name="producer", daemon=True)
        self.base_url, self.first, self.last = base_url, first, last
        self.headers = {"Authorization": f"Bearer {key}"}
        self.accepted: list[str] = []
        self.refused: Counter[str] = Counter()
        self.unexpected: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30, headers=self.headers) as client:
            for start in range(self.first, self.last, PER_REQUEST):
                self.send(client, [event(i) for i in range(start, min(start + PER_REQUEST, self.last))])
                time.sleep(PACE_S)

    def send(self, client: httpx.Client, events: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                response = client.post("/v1/events", json={"events": events})
            except httpx.TransportError as exc:
                self.refused[type(exc).__name__] += 1
            else:
                if response.status_code == 202:
                    self.accepted += response.json()["ids"]
                    return
                if response.status_code != 503:
                    self.unexpected.append(f"{response.status_code}: {response.text[:300]}")
                    return
                self.refused["503"] += 1
            time.sleep(0.2)
        self.unexpected.append(f"not accepted within 90 s: {events[0]['id']}..")


class Stack:
    """The deployment under test: servers of its own, the API in this process, worker and beat
    in child processes (each in a process group of its own, so a kill takes its children too)."""

    def __init__(self, data_dir: Path, postgres: PrivatePostgres, redis: PrivateRedis, receiver: Receiver) -> None:
        self.data_dir = data_dir
        self.postgres = postgres
        self.redis = redis
        self.receiver = receiver
        self.fault_file = data_dir / "vector-store-down"
        self.overrides: dict[str, object] = {
            "database_url": postgres.create_database(),
            "broker_url": self.redis.url,
            "batch_size": 16,
            "sweep_after_s": 3,
            "sweep_interval_s": 1,
            "alert_sweep_interval_s": 1,
            "webhook_allow_private": True,
            "webhook_backoff_s": 0.5,
            "vector_fault_file": self.fault_file,
            "torch_threads": 1,
            "log_level": "INFO",
        }
        self.settings = settings_for(data_dir, **self.overrides)
        upgrade(self.settings.sqlalchemy_url)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runtime = Runtime(self.settings)  # the API never opens the store: the worker owns it
        # Everything runs in a tenant of its own (on PostgreSQL: its own schema), beside an empty default one.
        self.key = api_key(self.runtime, tenant=TENANT)
        self.tenant = self.runtime.for_tenant(TENANT)
        self.db = Database(self.settings.sqlalchemy_url).for_tenant(TENANT)
        port = free_port()
        config = uvicorn.Config(create_app(self.runtime, warm_model=False), port=port, log_config=None)
        self.server = uvicorn.Server(config)
        self.api_thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.api_thread.start()
        self.api = f"http://127.0.0.1:{port}"
        self.wait(lambda: self.server.started, 30, "the API to start")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
        env.update({f"SIFT_{k.upper()}": str(v) for k, v in self.overrides.items()})
        env["SIFT_DATA_DIR"] = str(self.data_dir)
        return env

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the child keeps it
        argv = [sys.executable, "-m", "services.cli.app", *args]
        proc = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.spawn("worker", "worker", "--own-store", "--pool=prefork", "--concurrency=1")

    def setup_alerting(self) -> None:
        with httpx.Client(base_url=self.api, headers={"Authorization": f"Bearer {self.key}"}) as client:
            for entity in ENTITIES:
                response = client.put(
                    f"/v1/watchlist/{entity}", json={"name": f"{entity.title()} Inc", "ticker": entity}
                )
                assert response.status_code == 200, response.text
            hook = {"url": self.receiver.url, "secret": SECRET, "event_types": ["alert.raised"]}
            response = client.put("/v1/webhooks/faults", json=hook)
            assert response.status_code == 200, response.text

    def statuses(self) -> dict[str, int]:
        """Events by status; {} while the database is down."""
        try:
            with self.db.session_scope() as s:
                return dict(s.execute(select(Event.status, func.count()).group_by(Event.status)).all())  # type: ignore[arg-type]
        except Transient:
            return {}

    def all_done(self, expected: int) -> bool:
        statuses = self.statuses()
        if statuses.get("failed"):
            with self.db.session_scope() as s:
                errors = Counter(s.scalars(select(Event.error).where(Event.status == "failed")))
            pytest.fail(f"events failed: {statuses}, errors: {dict(errors)}\n{self.logs()}")
        return statuses == {"done": expected}

    def done(self) -> int:
        return self.statuses().get("done", 0)

    def wait(self, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout_s}s waiting for {what}; events: {self.statuses()}\n{self.logs()}"
                )
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.data_dir.glob("*.log"))

    def pool_child(self, worker: subprocess.Popen[bytes]) -> int:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert len(children) == 1, f"a prefork worker of concurrency 1 has one child: {children}"
        return int(children[0])

    def stop(self, proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the process (SIGKILL: its whole group), wait; whatever is left of the group is killed."""
        with suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            with suppress(Exception):
                self.stop(proc)
        self.server.should_exit = True
        self.api_thread.join(timeout=15)
        self.runtime.close()
        self.db.dispose()


@pytest.fixture
def stack(data_dir: Path, postgres: PrivatePostgres) -> Iterator[Stack]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on this machine")
    receiver = Receiver()
    redis: PrivateRedis | None = None
    made: Stack | None = None
    try:
        redis = PrivateRedis(data_dir)
        made = Stack(data_dir, postgres, redis, receiver)
        yield made
    finally:
        try:
            if made is not None:
                made.close()
        finally:
            if redis is not None:
                redis.close()
            receiver.close()
            postgres.start()  # up again for the next test, should a restart have failed half-way


def sigkill(stack: Stack, worker: subprocess.Popen[bytes]) -> None:
    stack.wait(lambda: stack.statuses().get("processing", 0) > 0, 60, "a batch in flight")
    os.kill(stack.pool_child(worker), signal.SIGKILL)  # the worker forks a new child
    reached = min(stack.done() + 32, PER_REQUEST + EVENTS)
    stack.wait(lambda: stack.done() >= reached, 90, "the new pool child at work")
    stack.stop(worker, signal.SIGKILL)  # the whole worker, its child with it
    stack.start_worker()


FAULTS: dict[str, Callable[[Stack, subprocess.Popen[bytes]], None]] = {
    "sigkill": sigkill,
    "redis": lambda stack, worker: stack.redis.restart(down_s=2),  # no persistence: its messages are gone
    "postgres": lambda stack, worker: stack.postgres.restart(down_s=3),
    "vectors": lambda stack, worker: vectors_down(stack, seconds=6),
}


def vectors_down(stack: Stack, *, seconds: float) -> None:
    stack.fault_file.touch()
    try:
        time.sleep(seconds)
    finally:
        stack.fault_file.unlink()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_accepted_event_is_done_once_after_a_fault(stack: Stack, fault: str) -> None:
    stack.setup_alerting()
    stack.spawn("beat", "beat")
    worker = stack.start_worker()
    warm_up = Producer(stack.api, stack.key, 0, PER_REQUEST)
    warm_up.run()  # the first batch loads the model: the faults come once the worker is at work
    stack.wait(lambda: stack.done() == PER_REQUEST, 120, "the warm-up events")
    producer = Producer(stack.api, stack.key, PER_REQUEST, PER_REQUEST + EVENTS)
    producer.start()
    stack.wait(lambda: stack.done() >= PER_REQUEST + 32, 60, "events flowing")
    FAULTS[fault](stack, worker)
    producer.join(timeout=180)
    assert not producer.is_alive()
    assert not producer.unexpected, producer.unexpected
    accepted = warm_up.accepted + producer.accepted
    assert len(set(accepted)) == len(accepted) == PER_REQUEST + EVENTS
    stack.wait(lambda: stack.all_done(len(accepted)), 180, "every accepted event done")
    news = [e for e in accepted if int(e.split("-")[1]) % 3 == 0]
    stack.wait(lambda: linked(stack) == len(news) and not pending(stack), 60, "links recorded, webhooks sent")
    time.sleep(2 * stack.settings.alert_sweep_interval_s)  # a duplicate delivery would come now
    for proc in stack.procs:
        stack.stop(proc)  # the worker releases the embedded store

    with stack.db.session_scope() as s:
        assert set(s.scalars(select(Event.id))) == set(accepted)  # one row each (the key), no other
        alerts = Counter((a.entity, a.rule) for a in s.scalars(select(Alert)))
        keys = {d.idempotency_key: d.status for d in s.scalars(select(WebhookDelivery))}
    assert set(e for e, _ in alerts) == set(ENTITIES) and max(alerts.values()) == 1, alerts
    assert set(keys.values()) == {"delivered"} and len(keys) == sum(alerts.values()), keys
    # At-least-once sending with one key per delivery (docs/guarantees.md): a POST whose "delivered"
    # could not be recorded (PostgreSQL down at that moment) is sent again with the same key, which
    # the receiver dedupes on. Every delivery arrives, under its own key, and a repeat is that rare case.
    assert set(stack.receiver.keys) == set(keys), "each delivery arrives, under its key"
    assert all(1 <= n <= 2 for n in stack.receiver.keys.values()), stack.receiver.keys
    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=stack.settings.vectors_dir)
    try:
        for kind, ids in (("news", news), ("ticket", [e for e in accepted if e not in set(news)])):
            collection = collection_for(kind, prefix=stack.tenant.settings.tenant_prefix)
            points = {point_id_for(i, tenant=TENANT) for i in ids}
            assert store.count(collection) == len(points)
            assert {hit.id for hit in store.retrieve(collection, sorted(points))} == points
            with suppress(NotFound):  # the default tenant's collection: never made, or empty
                assert store.count(collection_for(kind, prefix=stack.settings.collection_prefix)) == 0
    finally:
        store.close()
    print(f"{fault}: refused and re-sent {dict(producer.refused)}")


def linked(stack: Stack) -> int:
    """News events whose entity links are recorded."""
    try:
        with stack.db.session_scope() as s:
            return int(s.scalar(select(func.count(func.distinct(EntityLink.event_id)))) or 0)
    except Transient:
        return -1


def pending(stack: Stack) -> bool:
    """Whether a webhook delivery is still to be sent."""
    try:
        with stack.db.session_scope() as s:
            return bool(
                s.scalar(select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "pending"))
            )
    except Transient:
        return True
