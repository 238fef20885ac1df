"""`sift status` as a person runs it, against a running API (here uvicorn in a thread over the
embedded defaults): readiness, queue depths and throughput; exit code 1 when not ready or when no
API answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn

from services.api.app import create_app
from services.db.migrate import upgrade
from services.embedding.encoder import Encoder
from services.runtime import Runtime
from tests.conftest import api_key, settings_for
from tests.integration.test_cli import sift


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(runtime: Runtime) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime, warm_model=False), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime.close()


@pytest.fixture
def api_dir(data_dir: Path) -> Path:
    upgrade(settings_for(data_dir).sqlalchemy_url)
    return data_dir


@pytest.fixture
def ready_api(api_dir: Path, encoder: Encoder) -> Iterator[str]:
    runtime = Runtime(settings_for(api_dir))
    runtime._made["encoder"] = encoder
    runtime.store  # noqa: B018 - opened now, as the API's warm-up would, not by the first probe
    yield from serve(runtime)


@pytest.fixture
def loading_api(api_dir: Path) -> Iterator[str]:
    yield from serve(Runtime(settings_for(api_dir)))  # the model never loads: warm_model=False


def make_key(data_dir: Path) -> str:
    runtime = Runtime(settings_for(data_dir))
    try:
        return api_key(runtime, scopes=("read",))
    finally:
        runtime.close()


def finish(data_dir: Path, ids: list[str], minutes_ago: float) -> None:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sift.db'}")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET status = 'done', processed_at = :at WHERE id = :id"),
            [{"id": i, "at": datetime.now(UTC) - timedelta(minutes=minutes_ago)} for i in ids],
        )
    engine.dispose()


def test_status_prints_readiness_queues_and_throughput(ready_api: str, api_dir: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps({"id": f"n{i}", "kind": "news", "text": f"up {i}%"}) for i in range(9)))
    assert sift(api_dir, "ingest", str(events)).returncode == 0  # one message on the ingest queue
    finish(api_dir, ["n0", "n1", "n2"], minutes_ago=0.2)
    finish(api_dir, ["n3", "n4", "n5"], minutes_ago=3)  # n6..n8 stay queued

    key = make_key(api_dir)
    assert json.loads(sift(api_dir, "status", "--json", SIFT_API_URL=ready_api).stdout)["stats_error"]  # no key
    shown = sift(api_dir, "status", "--json", SIFT_API_URL=ready_api, SIFT_API_KEY=key)
    assert shown.returncode == 0, shown.stdout
    report = json.loads(shown.stdout)
    assert report["ready"] is True and report["api"] == ready_api
    assert report["status"] == "ready"
    assert report["checks"] == dict.fromkeys(
        ("database", "broker", "model", "vectors", "backlog", "vector writes"), "ok"
    )
    assert report["queues"] == {"ingest": 1, "alerts": 0, "train": 0}
    assert report["throughput"] == {"1m": 3.0, "5m": 1.2, "15m": 0.4}
    assert report["events"] == {"news": {"done": 6, "queued": 3}}

    table = sift(api_dir, "status", SIFT_API_URL=ready_api, SIFT_API_KEY=key, COLUMNS="200")
    assert table.returncode == 0, table.stderr
    for expected in (f"Sift API at {ready_api}: ready", "database", "ingest", "last 5m", "1.2", "queued"):
        assert expected in table.stdout

    engine = sa.create_engine(f"sqlite:///{api_dir / 'sift.db'}")  # n6 arrived an hour ago and still waits
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET received_at = :at WHERE id = 'n6'"),
            {"at": datetime.now(UTC) - timedelta(hours=1)},
        )
    engine.dispose()
    stuck = sift(api_dir, "status", "--json", SIFT_API_URL=ready_api, SIFT_API_KEY=key)
    assert stuck.returncode == 3, stuck.stdout
    report = json.loads(stuck.stdout)
    assert report["status"] == "degraded" and report["ready"] is True
    assert "SIFT_STALE_AFTER_S" in report["checks"]["backlog"]


def test_status_exits_1_when_not_ready(loading_api: str, api_dir: Path) -> None:
    shown = sift(api_dir, "status", SIFT_API_URL=loading_api, COLUMNS="200")
    assert shown.returncode == 1
    assert "not ready" in shown.stdout and "model still loading" in shown.stdout
    report = json.loads(sift(api_dir, "status", "--json", SIFT_API_URL=loading_api).stdout)
    assert report["ready"] is False and report["checks"]["database"] == "ok"


def test_status_exits_1_when_no_api_answers(data_dir: Path) -> None:
    shown = sift(data_dir, "status", SIFT_API_URL=f"http://127.0.0.1:{free_port()}")
    assert shown.returncode == 1 and "no Sift API at" in shown.stderr
