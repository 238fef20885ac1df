"""Readiness that sees stuck work: /readyz says degraded (200) while an event waits longer than
SIFT_STALE_AFTER_S or vector writes fail, and 503 when this process cannot own the embedded store;
/metrics exports the age of the oldest unfinished event."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from services.api.app import create_app
from services.db.models import Event
from services.embedding.encoder import Encoder
from services.errors import VectorStoreUnavailable
from services.events import accept as ingest
from services.runtime import Runtime
from tests.conftest import open_runtime, settings_for
from tests.recording import run_batch

LIMITS = ingest.Limits(max_events=10, max_text_chars=1000)


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(
        settings_for(data_dir, stale_after_s=600, vector_fault_file=data_dir / "vectors-down"), encoder
    ) as rt:
        yield rt


def readyz(rt: Runtime) -> tuple[int, dict[str, object]]:
    with TestClient(create_app(rt, warm_model=False)) as client:
        answer = client.get("/readyz")
        return answer.status_code, answer.json()


def accept(rt: Runtime, event_id: str, kind: str = "ticket") -> None:
    with rt.db.session_scope() as s:
        ingest.accept(s, events=[ingest.EventIn(id=event_id, kind=kind, text="my card")], limits=LIMITS)  # type: ignore[arg-type]


def test_an_event_waiting_longer_than_the_threshold_degrades_readiness_and_shows_in_metrics(runtime: Runtime) -> None:
    runtime.store  # noqa: B018 - open, as the warm-up would
    accept(runtime, "fresh")
    assert readyz(runtime) == (200, {"status": "ready", "checks": dict.fromkeys(CHECKS, "ok")})
    with runtime.db.session_scope() as s:
        s.execute(update(Event).values(received_at=datetime.now(UTC) - timedelta(hours=1)))
    status, body = readyz(runtime)
    assert status == 200 and body["status"] == "degraded"
    assert "SIFT_STALE_AFTER_S=600" in body["checks"]["backlog"]  # type: ignore[index]
    with TestClient(create_app(runtime, warm_model=False)) as client:
        scraped = client.get("/metrics").text
    [line] = [x for x in scraped.splitlines() if x.startswith("sift_oldest_unfinished_event_age_seconds ")]
    assert 3590 < float(line.split()[1]) < 3700
    assert run_batch(["fresh"]) == {"done": 1, "failed": 0}
    assert readyz(runtime)[1]["status"] == "ready"


def test_failing_vector_writes_degrade_readiness_until_a_write_succeeds(runtime: Runtime) -> None:
    runtime.store  # noqa: B018
    accept(runtime, "a", kind="product")  # no step before the upsert
    fault = runtime.settings.vector_fault_file
    assert fault is not None
    fault.touch()
    try:
        with pytest.raises(VectorStoreUnavailable):  # released; the task retries it
            run_batch(["a"])
        status, body = readyz(runtime)
    finally:
        fault.unlink()
    assert status == 503  # the store does not answer its ping either
    assert str(body["checks"]["vector writes"]).startswith("the last vector write failed")  # type: ignore[index]
    assert run_batch(["a"]) == {"done": 1, "failed": 0}
    assert readyz(runtime)[1]["checks"]["vector writes"] == "ok"  # type: ignore[index]


def test_a_process_that_is_not_the_store_owner_is_not_ready(runtime: Runtime, data_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from services.vectors import owner; "
            f"owner.acquire(owner.store_lock_file(Path({str(data_dir / 'qdrant')!r}))); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        status, body = readyz(runtime)
    finally:
        holder.kill()
        holder.wait()
    assert status == 503 and "does not own the embedded vector store" in str(body["checks"]["vectors"])  # type: ignore[index]
    assert str(holder.pid) not in str(body)


CHECKS = ("database", "broker", "model", "vectors", "backlog", "vector writes")


def test_a_started_api_is_ready_only_once_warmed_up(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import threading
    import time

    release, prefill = threading.Event(), runtime.recommender.prefill

    def slow_prefill() -> None:  # the feeds' cache takes as long as the test wants
        release.wait(60)
        prefill()

    monkeypatch.setattr(runtime.recommender, "prefill", slow_prefill)
    gc.unfreeze()
    try:
        with TestClient(create_app(runtime)) as client:  # warms up in the background
            assert runtime.model_loaded()  # the encoder fixture: loaded before the warm-up starts
            answer = client.get("/readyz")
            assert answer.status_code == 503 and answer.json()["checks"]["model"] == "warming up (the feeds' cache)"
            assert gc.get_freeze_count() == 0
            release.set()
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.get("/readyz").json() == {"status": "ready", "checks": dict.fromkeys(CHECKS, "ok")}
        # modules, the model and the settings: a full collection would traverse them on every pass
        assert gc.get_freeze_count() > 100_000
    finally:
        release.set()
        gc.unfreeze()
