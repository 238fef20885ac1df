"""Webhook delivery end to end against a real HTTP receiver on 127.0.0.1: signed bodies, retries
with backoff, the delivery log, no duplicate delivery (also when a worker dies mid-delivery),
and the SSRF checks on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from services.alerts import signing, targets, webhooks
from services.api.app import create_app
from services.db.migrate import upgrade
from services.db.models import Alert, WebhookDelivery, as_utc
from services.errors import InvalidInput
from services.runtime import Runtime, reset_runtime
from tests.conftest import authorize, settings_for

SECRET = "receiver-shared-secret"
T0 = datetime.now(UTC).replace(microsecond=0)


class Receiver:
    """A real HTTP server that answers POSTs with the given statuses (the last one repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answered: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = statuses[min(len(receiver.requests), len(statuses) - 1)]
                receiver.requests.append((dict(self.headers.items()), body))
                receiver.answered.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"ok!!" if status < 300 else b"boom")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*statuses: int) -> Receiver:
        made.append(Receiver(list(statuses)))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def make_runtime(data_dir: Path) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        settings = settings_for(data_dir, **overrides)
        upgrade(settings.sqlalchemy_url)
        made.append(reset_runtime(settings))
        return made[-1]

    yield make
    for rt in made:
        rt.close()
    reset_runtime()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def api(runtime: Runtime) -> TestClient:
    return authorize(TestClient(create_app(runtime, warm_model=False)), runtime)


def add_hook(runtime: Runtime, hook_id: str, url: str, event_types: list[str] | None = None) -> None:
    body = webhooks.WebhookIn.model_validate(
        {"url": url, "secret": SECRET, "event_types": event_types or ["alert.raised"]}
    )
    with runtime.db.session_scope() as session:
        webhooks.put_webhook(session, webhook_id=hook_id, body=body, allow_private=True, now=T0)


def add_alert(runtime: Runtime) -> int:
    with runtime.db.session_scope() as session:
        alert = Alert(
            entity="ACME",
            rule="negative_spike",
            severity="high",
            state="open",
            window_start=T0 - timedelta(hours=1),
            window_end=T0,
            figures={"negative": 12, "z": 3.4},
            event_ids=["news-1", "news-2"],
            created_at=T0,
            updated_at=T0,
        )
        session.add(alert)
        session.flush()
        return alert.id


def queue(runtime: Runtime, alert_id: int, event_type: str = "alert.raised") -> list[int]:
    with runtime.db.session_scope() as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        return webhooks.queue_deliveries(session, alert=alert, event_type=event_type, now=T0)


def row(runtime: Runtime, delivery_id: int) -> WebhookDelivery:
    with runtime.db.session_scope() as session:
        found = session.get(WebhookDelivery, delivery_id)
        assert found is not None
        return found


def deliveries(runtime: Runtime) -> int:
    with runtime.db.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0)


def send(rt: Runtime, http: httpx.Client, delivery_id: int, now: datetime, sessions: Any = None) -> str:
    """One worker's attempt at a delivery (sessions: a session factory standing in for the runtime's)."""
    sessions = sessions or rt.db.session_scope
    return webhooks.deliver(sessions, delivery_id=delivery_id, settings=rt.settings, client=http, now=now)


def retry_until_settled(
    rt: Runtime, http: httpx.Client, receiver: Receiver, delivery_id: int
) -> tuple[list[str], datetime]:
    """Deliver, then deliver again each time the backoff says it is due; check the backoff on the way."""
    now, seen = T0, [send(rt, http, delivery_id, T0)]
    while seen[-1] == "pending":
        # Not yet due: a duplicate message or an early retry sends nothing.
        assert send(rt, http, delivery_id, now) == "pending" and len(receiver.requests) == len(seen)
        current = row(rt, delivery_id)
        due = as_utc(current.next_attempt_at)
        assert due - now == timedelta(seconds=rt.settings.webhook_backoff_s * 2 ** (current.attempts - 1))
        assert current.last_status == 500 and current.last_error == "HTTP 500: boom"
        with rt.db.session_scope() as session:
            assert webhooks.due_deliveries(session, now=now) == []
            assert webhooks.due_deliveries(session, now=due) == [delivery_id]
        now = due
        seen.append(send(rt, http, delivery_id, now))
    return seen, now


def check_requests(receiver: Receiver, alert_id: int) -> None:
    """Every request is signed, carries the same key, and the body is the alert."""
    keys = {headers["X-Sift-Idempotency-Key"] for headers, _ in receiver.requests}
    assert keys == {f"alert-{alert_id}-alert.raised-ops"}
    for headers, body in receiver.requests:
        assert headers["webhook-id"] == headers["X-Sift-Idempotency-Key"]
        at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)  # T0: the library checks the signature
        expected = Webhook(signing.whsec(SECRET)).sign(headers["webhook-id"], at, body.decode())
        assert headers["webhook-signature"] == expected
        assert expected != Webhook(signing.whsec("not-the-secret-at-all")).sign(
            headers["webhook-id"], at, body.decode()
        )
        assert headers["X-Sift-Event"] == "alert.raised" and headers["Content-Type"] == "application/json"
        assert headers["Host"] == f"127.0.0.1:{receiver.port}"
        assert json.loads(body)["idempotency_key"] == f"alert-{alert_id}-alert.raised-ops"
    assert json.loads(receiver.requests[0][1])["alert"] == {
        "id": alert_id,
        "entity": "ACME",
        "rule": "negative_spike",
        "severity": "high",
        "state": "open",
        "window_start": (T0 - timedelta(hours=1)).isoformat(),
        "window_end": T0.isoformat(),
        "figures": {"negative": 12, "z": 3.4},
        "event_ids": ["news-1", "news-2"],
    }


def test_retries_with_backoff_until_accepted_and_never_sends_twice(
    database_url: str | None,
    make_runtime: Callable[..., Runtime],
    receivers: Callable[..., Receiver],
    http: httpx.Client,
) -> None:
    rt = make_runtime(database_url=database_url, webhook_allow_private=True, webhook_backoff_s=0.5)
    receiver = receivers(500, 500, 200)
    add_hook(rt, "ops", receiver.url)
    add_hook(rt, "cleared-only", receiver.url, event_types=["alert.cleared"])
    alert_id = add_alert(rt)
    (delivery_id,) = queue(rt, alert_id)

    seen, now = retry_until_settled(rt, http, receiver, delivery_id)
    assert seen == ["pending", "pending", "delivered"] and receiver.answered == [500, 500, 200]
    check_requests(receiver, alert_id)
    done = row(rt, delivery_id)
    assert (done.status, done.attempts, done.last_status, done.last_error) == ("delivered", 3, 200, "HTTP 500: boom")

    # Delivered: another message for it, or the same alert queued again, sends nothing more.
    later = now + timedelta(hours=2)
    assert send(rt, http, delivery_id, later) == "delivered"
    assert queue(rt, alert_id) == [] and deliveries(rt) == 1
    with rt.db.session_scope() as session:
        assert webhooks.due_deliveries(session, now=later) == []
    assert len(receiver.requests) == 3

    with api(rt) as client:
        log = client.get("/v1/webhooks/ops/deliveries", params={"limit": 10}).json()["deliveries"]
        assert [(d["status"], d["attempts"], d["last_status"]) for d in log] == [("delivered", 3, 200)]
        assert log[0]["idempotency_key"] == f"alert-{alert_id}-alert.raised-ops" and log[0]["delivered_at"]
        assert client.get("/v1/webhooks/cleared-only/deliveries").json() == {"deliveries": []}


def test_a_worker_dying_after_the_post_resends_the_same_key_once_its_lease_ends(
    database_url: str | None,
    make_runtime: Callable[..., Runtime],
    receivers: Callable[..., Receiver],
    http: httpx.Client,
) -> None:
    rt = make_runtime(database_url=database_url, webhook_allow_private=True)
    receiver = receivers(200)
    add_hook(rt, "ops", receiver.url)
    (delivery_id,) = queue(rt, add_alert(rt))
    opened = 0

    def dies_before_recording() -> AbstractContextManager[Session]:
        nonlocal opened
        opened += 1
        if opened == 2:  # the transaction that would record the outcome
            raise SystemExit("worker killed")
        return rt.db.session_scope()

    with pytest.raises(SystemExit):
        send(rt, http, delivery_id, T0, sessions=dies_before_recording)
    assert len(receiver.requests) == 1 and row(rt, delivery_id).status == "pending"

    # Another worker picking the same id right away sends nothing: the attempt is leased.
    assert send(rt, http, delivery_id, T0) == "pending"
    assert len(receiver.requests) == 1
    after_lease = as_utc(row(rt, delivery_id).next_attempt_at)
    assert after_lease > T0
    assert send(rt, http, delivery_id, after_lease) == "delivered"
    keys = [headers["X-Sift-Idempotency-Key"] for headers, _ in receiver.requests]
    assert len(keys) == 2 and len(set(keys)) == 1  # a receiver deduping on the key accepts it once


def test_a_receiver_that_always_fails_ends_failed_after_max_attempts(
    database_url: str | None,
    make_runtime: Callable[..., Runtime],
    receivers: Callable[..., Receiver],
    http: httpx.Client,
) -> None:
    rt = make_runtime(
        database_url=database_url, webhook_allow_private=True, webhook_backoff_s=0.01, webhook_max_attempts=3
    )
    receiver = receivers(500)
    add_hook(rt, "ops", receiver.url)
    (delivery_id,) = queue(rt, add_alert(rt))
    now, statuses = T0, []
    for _ in range(6):
        statuses.append(send(rt, http, delivery_id, now))
        now += timedelta(hours=2)
    assert statuses == ["pending", "pending", "failed", "failed", "failed", "failed"]
    assert len(receiver.requests) == 3
    failed = row(rt, delivery_id)
    assert (failed.attempts, failed.last_status, failed.delivered_at) == (3, 500, None)
    with rt.db.session_scope() as session:
        assert webhooks.due_deliveries(session, now=now) == []


def test_a_host_that_now_resolves_to_a_private_address_is_not_sent_to(
    database_url: str | None,
    make_runtime: Callable[..., Runtime],
    receivers: Callable[..., Receiver],
    http: httpx.Client,
) -> None:
    rt = make_runtime(database_url=database_url, webhook_allow_private=False, webhook_backoff_s=1)
    receiver = receivers(200)
    # Stored while it resolved elsewhere (here: written with the check relaxed); at delivery time
    # the name resolves to a loopback address.
    add_hook(rt, "rebound", f"http://localhost:{receiver.port}/hook")
    (delivery_id,) = queue(rt, add_alert(rt))
    status = send(rt, http, delivery_id, T0)
    assert status == "pending" and receiver.requests == []
    refused = row(rt, delivery_id)
    assert refused.attempts == 1 and refused.last_status is None
    assert refused.last_error and refused.last_error.startswith("not sent") and "loopback" in refused.last_error


def test_deleting_a_webhook_stops_its_pending_deliveries(
    make_runtime: Callable[..., Runtime], receivers: Callable[..., Receiver], http: httpx.Client
) -> None:
    rt = make_runtime(webhook_allow_private=True)
    receiver = receivers(200)
    add_hook(rt, "ops", receiver.url)
    (delivery_id,) = queue(rt, add_alert(rt))
    with api(rt) as client:
        assert client.delete("/v1/webhooks/ops").status_code == 204
        assert client.get("/v1/webhooks/ops/deliveries").status_code == 404
    assert send(rt, http, delivery_id, T0) == "failed"
    assert receiver.requests == [] and row(rt, delivery_id).last_error == "the webhook was deleted"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://localhost/x", "loopback"),
        ("http://10.0.0.1/x", "private"),
        ("http://169.254.169.254/latest", "link-local"),
    ],
)
def test_private_and_loopback_urls_are_refused_unless_allowed(
    make_runtime: Callable[..., Runtime], url: str, problem: str
) -> None:
    body = {"url": url, "secret": SECRET}
    with api(make_runtime(webhook_allow_private=False)) as client:
        response = client.put("/v1/webhooks/ops", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_input" and f"{problem} address" in error["message"]
        assert error["details"]["problem"] == problem
        assert client.get("/v1/webhooks").json() == {"webhooks": []}
    with api(make_runtime(webhook_allow_private=True)) as client:
        response = client.put("/v1/webhooks/ops", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["url"] == url and "secret" not in response.json()


@pytest.mark.parametrize(
    "url", ["http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/", "http://224.0.0.1/"]
)
def test_other_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="refused"):
        targets.check_url(url, allow_private=False)
    assert targets.check_url("http://93.184.215.14/hook", allow_private=False) == ["93.184.215.14"]


def test_webhook_crud_and_bad_input(make_runtime: Callable[..., Runtime]) -> None:
    with api(make_runtime(webhook_allow_private=True)) as client:
        good = {"url": "http://127.0.0.1:9/x", "secret": SECRET, "event_types": ["alert.raised", "alert.cleared"]}
        for bad, field in (
            ({**good, "url": "ftp://127.0.0.1/x"}, "url"),
            ({**good, "secret": "short"}, "secret"),
            ({**good, "event_types": ["alert.exploded"]}, "event_types"),
            ({**good, "extra": True}, "extra"),
        ):
            response = client.put("/v1/webhooks/ops", json=bad)
            assert response.status_code == 422, response.text
            assert field in response.json()["error"]["message"]
        assert client.put("/v1/webhooks/" + "x" * 65, json=good).status_code == 422
        assert client.put("/v1/webhooks/ops", json={**good, "url": "http://nonexistent.invalid/"}).status_code == 422
        assert client.get("/v1/webhooks").json() == {"webhooks": []}

        created = client.put("/v1/webhooks/ops", json=good).json()
        assert created["event_types"] == ["alert.raised", "alert.cleared"] and "secret" not in created
        replaced = client.put("/v1/webhooks/ops", json={**good, "url": "http://127.0.0.1:10/y"}).json()
        assert replaced["url"] == "http://127.0.0.1:10/y" and replaced["created_at"] == created["created_at"]
        assert client.get("/v1/webhooks/ops").json() == replaced
        assert client.get("/v1/webhooks").json() == {"webhooks": [replaced]}
        assert client.delete("/v1/webhooks/ops").status_code == 204
        for missing in (client.get("/v1/webhooks/ops"), client.delete("/v1/webhooks/ops")):
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert client.get("/v1/webhooks/nope/deliveries").status_code == 404
