"""The HTTP API on the embedded defaults (SQLite file, on-disk broker): input errors are 4xx
with a message that says what to fix, and nothing is written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.migrate import upgrade
from services.runtime import Runtime
from tests.conftest import authorize, settings_for


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    settings = settings_for(data_dir, max_text_chars=1000)
    upgrade(settings.sqlalchemy_url)
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as c:
        authorize(c, runtime)
        yield c


def rows(runtime: Runtime) -> int:
    with runtime.db.session_scope() as s:
        return int(s.scalar(sa.text("SELECT count(*) FROM events")) or 0)


def ticket(i: int = 0, **extra: object) -> dict[str, object]:
    return {"id": f"t{i}", "kind": "ticket", "text": f"where is my card {i}?", **extra}


def test_accepted_events_are_stored_and_enqueued(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/v1/events", json={"events": [ticket(i) for i in range(5)]})
    assert response.status_code == 202, response.text
    assert response.json() == {"ids": [f"t{i}" for i in range(5)], "queued": 5}
    event = client.get("/v1/events/t3").json()
    assert event["status"] == "queued" and event["kind"] == "ticket" and event["predictions"] == {}
    assert event["received_at"].endswith("Z") or event["received_at"].endswith("+00:00")
    deadline = time.monotonic() + 5
    while client.get("/v1/stats").json()["queues"]["ingest"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the coalescing publisher sends after SIFT_BATCH_WAIT_MS
    stats = client.get("/v1/stats").json()
    assert stats["events"] == {"ticket": {"queued": 5}}
    assert stats["queues"]["ingest"] == 1  # five ids, one message


def test_resending_is_idempotent(client: TestClient, runtime: Runtime) -> None:
    body = {"events": [ticket(1), ticket(2)]}
    assert client.post("/v1/events", json=body).json()["queued"] == 2
    assert client.post("/v1/events", json=body).json() == {"ids": ["t1", "t2"], "queued": 0}
    assert rows(runtime) == 2


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"events": [ticket(0, text="")]}, 422, "events.0.text"),
        ({"events": [ticket(0, text="  \n ")]}, 422, "must not be empty"),
        ({"events": [ticket(0, kind="tweet")]}, 422, "events.0.kind"),
        ({"events": [ticket(i) for i in range(1001)]}, 422, "at most 1000"),
        ({"events": [ticket(0, text="x" * 1001)]}, 422, "longer than 1000 characters"),
        ({"events": []}, 422, "at least one"),
        ({"event": [ticket(0)]}, 422, "events"),
        ({"events": [ticket(0), ticket(0)]}, 422, "more than once"),
        ({"events": [ticket(0, metadata="not a dict")]}, 422, "metadata"),
        ({"events": [ticket(0, occurred_at="yesterday")]}, 422, "occurred_at"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    client: TestClient, runtime: Runtime, body: dict[str, object], status: int, says: str
) -> None:
    response = client.post("/v1/events", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] or says in str(error["details"])
    assert error["code"]
    assert rows(runtime) == 0


def test_malformed_json_is_a_400(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/v1/events", content=b'{"events": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert "not valid JSON" in response.json()["error"]["message"]
    assert rows(runtime) == 0


def test_a_body_over_the_size_limit_is_a_413(runtime: Runtime) -> None:
    runtime.settings.max_body_bytes = 2048
    with TestClient(create_app(runtime, warm_model=False)) as small:
        authorize(small, runtime)
        response = small.post("/v1/events", json={"events": [ticket(0, text="y" * 4000)]})
    assert response.status_code == 413
    assert "2048 bytes" in response.json()["error"]["message"]
    assert rows(runtime) == 0


def test_an_id_reused_across_kinds_is_a_409(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/events", json={"events": [ticket(7)]})
    response = client.post("/v1/events", json={"events": [ticket(7, kind="news")]})
    assert response.status_code == 409
    assert response.json()["error"]["details"] == [{"id": "t7", "stored_kind": "ticket", "sent_kind": "news"}]


def test_unknown_event_is_a_404(client: TestClient) -> None:
    response = client.get("/v1/events/nope")
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "no event with id 'nope'", "details": None}


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503  # warm_model=False: the model is not loaded in this app
    checks = ready.json()["checks"]
    assert checks["database"] == "ok" and checks["broker"] == "ok" and "model still loading" in checks["model"]


def test_an_unknown_field_is_named_with_the_fields_that_exist(client: TestClient) -> None:
    response = client.post("/v1/events", json={"events": [ticket(0, ts="2026-11-30T09:10:00Z")]})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "unknown field 'ts'" in message and "occurred_at" in message, message
