"""Every request limit answers with the JSON error envelope, a 4xx that fits, and a message that
says what to fix; nothing over a limit is written. Limits already covered by test_api.py
(events per request, text length, Content-Length over the body limit) are not repeated here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.embedding.encoder import Encoder
from services.runtime import Runtime
from tests.conftest import api_key, authorize, open_runtime, settings_for

LIMITS = {
    "max_events_per_request": 3,
    "max_text_chars": 50,
    "max_labels_per_request": 3,
    "max_faqs_per_request": 2,
    "max_paraphrases_per_faq": 2,
    "max_interactions_per_request": 2,
    "max_body_bytes": 4096,
}


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir, **LIMITS), encoder, process_wide=False) as rt:
        yield rt


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as c:
        authorize(c, runtime)
        yield c


def count(runtime: Runtime, table: str) -> int:
    with runtime.db.session_scope() as s:
        return int(s.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


def refused(response: object, status: int, *says: str) -> dict[str, object]:
    assert hasattr(response, "status_code") and hasattr(response, "json")
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error: dict[str, object] = response.json()["error"]
    assert error["code"] and isinstance(error["message"], str)
    for text in says:
        assert text in error["message"], error
    return error


def faq(i: int, **extra: object) -> dict[str, object]:
    return {"id": f"f{i}", "question": f"how do I do thing {i}?", "answer": "like this", **extra}


def test_labels_per_request(client: TestClient, runtime: Runtime) -> None:
    labels = [{"text": f"text {i}", "task": "sentiment", "label": "positive"} for i in range(4)]
    refused(client.post("/v1/labels", json={"labels": labels}), 422, "4 in one request", "at most 3", "split")
    assert count(runtime, "labels") == 0 and count(runtime, "events") == 0


def test_a_labeled_text_over_the_text_limit(client: TestClient, runtime: Runtime) -> None:
    labels = [{"text": "x" * 51, "task": "sentiment", "label": "positive"}]
    refused(client.post("/v1/labels", json={"labels": labels}), 422, "labels.0.text", "longer than 50 characters")
    assert count(runtime, "labels") == 0 and count(runtime, "events") == 0


def test_faqs_per_request_paraphrases_per_faq_and_their_length(client: TestClient, runtime: Runtime) -> None:
    refused(
        client.post("/v1/faqs:bulk", json={"faqs": [faq(i) for i in range(3)]}), 422, "3 in one request", "at most 2"
    )
    too_many = faq(0, paraphrases=["a", "b", "c"])
    refused(client.post("/v1/faqs:bulk", json={"faqs": [too_many]}), 422, "faqs.0.paraphrases", "more than 2")
    too_long = faq(1, paraphrases=["y" * 51])
    error = refused(client.put("/v1/faqs/f1", json={k: v for k, v in too_long.items() if k != "id"}), 422)
    assert "longer than 50 characters" in str(error["message"])
    assert count(runtime, "faqs") == 0


def test_interactions_per_request(client: TestClient, runtime: Runtime) -> None:
    batch = [{"user_id": "u", "item_id": f"i{i}", "type": "view"} for i in range(3)]
    refused(client.post("/v1/interactions", json={"interactions": batch}), 422, "3 interactions", "at most 2")
    assert count(runtime, "interactions") == 0


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"title": "t" * 1001}, "events.1.title"),
        ({"metadata": {"k": "v" * 17_000}}, "larger than 16384 bytes"),
        ({"entities": [f"E{i}" for i in range(101)]}, "events.1.entities"),
        ({"entities": ["E" * 201]}, "events.1.entities.0"),
        ({"entities": [""]}, "events.1.entities.0"),
        ({"id": "i" * 129}, "events.1.id"),
    ],
)
def test_event_field_limits(runtime: Runtime, event: dict[str, object], says: str) -> None:
    runtime.settings.max_body_bytes = 100_000
    bad = {"id": "bad", "kind": "news", "text": "x", **event}
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        response = client.post("/v1/events", json={"events": [{"id": "ok", "kind": "news", "text": "fine"}, bad]})
    refused(response, 422, says)
    assert count(runtime, "events") == 0  # the good event of the batch is not written either


def test_match_text_over_its_limit(runtime: Runtime) -> None:
    runtime.settings.max_body_bytes = 1_000_000
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        response = client.post("/v1/match", json={"text": "m" * 100_001})
    refused(response, 422, "text", "at most 100000 characters")


def test_a_chunked_body_over_the_limit_is_a_413_too(client: TestClient, runtime: Runtime) -> None:
    events = [{"id": f"c{i}", "kind": "news", "text": "z" * 40} for i in range(3)]
    body = ('{"events": ' + str(events).replace("'", '"') + ', "pad": "' + "p" * 5000 + '"}').encode()
    chunks = iter([body[i : i + 1000] for i in range(0, len(body), 1000)])  # no Content-Length: chunked
    response = client.post("/v1/events", content=chunks, headers={"content-type": "application/json"})
    error = refused(response, 413, "4096 bytes", "SIFT_MAX_BODY_BYTES")
    assert error["code"] == "body_too_large"
    assert count(runtime, "events") == 0


def test_the_rate_limit_is_per_client_with_retry_after(runtime: Runtime) -> None:
    runtime.settings.rate_limit_per_s = 0.01  # one token per 100 s: the burst is all a client gets here
    runtime.settings.rate_limit_burst = 3
    with TestClient(create_app(runtime, warm_model=False)) as client:
        alice = {"Authorization": f"Bearer {api_key(runtime)}"}
        assert [client.get("/v1/stats", headers=alice).status_code for _ in range(3)] == [200, 200, 200]
        response = client.post("/v1/events", json={"events": [{"kind": "news", "text": "x"}]}, headers=alice)
        error = refused(response, 429, "at most 0.01 requests/s per client", "retry after")
        assert error["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) == error["details"]["retry_after_s"] > 0  # type: ignore[index]
        assert count(runtime, "events") == 0
        # another key, and the address of a caller without one (refused for want of a key), have their own buckets
        assert client.get("/v1/stats", headers={"Authorization": f"Bearer {api_key(runtime)}"}).status_code == 200
        assert client.get("/v1/stats").status_code == 401
        # probes and scrapes are never limited
        for path in ("/healthz", "/readyz", "/metrics"):
            assert {client.get(path, headers=alice).status_code for _ in range(5)} <= {200, 503}
        assert client.get("/metrics").text.count('status="429"') >= 1  # counted like any answer


def test_no_rate_limit_by_default(client: TestClient, runtime: Runtime) -> None:
    assert runtime.settings.rate_limit_per_s == 0
    assert {client.get("/v1/stats").status_code for _ in range(200)} == {200}
