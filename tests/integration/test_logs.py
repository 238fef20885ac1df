"""One event followed through the JSON logs: the API's lines carry the request id and the event
id, the publish line the Celery task id of its message, and the worker's claim, upsert and record
lines that task id, one batch id and the event id."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services import logs
from services.api.app import create_app
from services.config import get_settings
from services.embedding.encoder import Encoder
from services.runtime import Runtime
from tests.conftest import authorize, open_runtime, settings_for

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir, log_format="json", log_level="INFO"), encoder) as rt:
        yield rt


@pytest.fixture
def lines(runtime: Runtime) -> Iterator[Lines]:
    """Every line logged during the test, parsed (each must be one JSON object)."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.setup(runtime.settings, stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def worker_signals(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """worker.app's receivers (a task's id on its lines), imported with its data dir out of the repo."""
    monkeypatch.setenv("SIFT_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    import worker.app  # noqa: F401

    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def one(found: list[dict[str, Any]], what: str) -> dict[str, Any]:
    assert len(found) == 1, f"{what}: {found}"
    return found[0]


def test_one_event_is_followed_from_the_api_to_its_upsert(runtime: Runtime, lines: Lines, worker_signals: None) -> None:
    from worker.tasks import process_events

    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        body = {"events": [{"id": "follow-me", "kind": "ticket", "text": "my card has not arrived"}]}
        response = client.post("/v1/events", json=body, headers={"X-Request-ID": "req-42"})
        assert response.status_code == 202 and response.headers["x-request-id"] == "req-42"
        deadline = time.monotonic() + 5
        while not [x for x in lines() if x["message"].startswith("published")]:
            assert time.monotonic() < deadline, "the ids were never published"
            time.sleep(0.02)
    every = lines()
    assert all({"ts", "level", "logger", "message"} <= set(x) for x in every)
    mine = [x for x in every if "follow-me" in x.get("event_ids", [])]

    accepted = one([x for x in mine if x["message"].startswith("accepted")], "the API's accept line")
    assert accepted["request_id"] == "req-42" and accepted["logger"] == "services.api.routers.events"
    request = one([x for x in every if x["message"] == "POST /v1/events 202"], "the request line")
    assert request["request_id"] == "req-42" and request["status"] == 202 and request["ms"] >= 0
    task_id = one([x for x in mine if x["message"].startswith("published")], "the publish line")["published_task_id"]

    # The worker's side: the task body under the message's task id, as a worker runs it.
    result = process_events.apply(args=[["follow-me"]], task_id=task_id)
    assert result.successful() and result.result == {"done": 1, "failed": 0}
    worker = [x for x in lines() if "follow-me" in x.get("event_ids", []) and x.get("task_id") == task_id]
    stages = {x["message"].split(" ")[0]: x for x in worker}
    assert set(stages) == {"claimed", "upserted", "recorded"}, worker
    assert stages["upserted"]["logger"] == "services.events.pipeline" and stages["upserted"]["collection"]
    batch_ids = {x["batch_id"] for x in worker}
    assert len(batch_ids) == 1 and batch_ids != {None}
    assert all(x["task"] == "sift.ingest.process_events" for x in worker)
    logging.getLogger("test").info("after the task")  # its context ends with it
    assert not {"task_id", "batch_id"} & set(lines()[-1])
