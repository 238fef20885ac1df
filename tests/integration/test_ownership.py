"""One owner per data dir and per embedded vector store: a second process is refused at start, with
the holder named, before it touches a shard, and the owner keeps working."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.vectors import open_store, owner
from services.vectors.base import VectorPoint
from tests.conftest import settings_for
from tests.integration.test_worker_e2e import Deployment

HOLD = (
    "import time; from pathlib import Path; from services.vectors import owner; "
    "{take}; print('held', flush=True); time.sleep(60)"
)


def holding(take: str) -> subprocess.Popen[str]:
    """A process that holds a lock (as `take` takes it) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(take=take)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def sift(env: dict[str, str], *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.app", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def plain_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    return {**env, "SIFT_DATA_DIR": str(data_dir), "COLUMNS": "300", **extra}


def test_a_second_process_cannot_open_the_embedded_store_and_the_lock_dies_with_its_holder(data_dir: Path) -> None:
    vectors = data_dir / "qdrant"
    holder = holding(f"owner.acquire(owner.store_lock_file(Path({str(vectors)!r})))")
    try:
        with pytest.raises(owner.OwnedElsewhere) as refused:
            open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=vectors)
        assert f"pid={holder.pid} host={socket.gethostname()}" in refused.value.message
        assert "SIFT_QDRANT_URL" in refused.value.message
        assert not any(p.is_dir() for p in vectors.iterdir())  # no shard was touched
    finally:
        holder.kill()
        holder.wait()
    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=vectors)  # the kernel dropped the lock
    try:
        store.ensure_collection("c", dimension=2, indexes=[])
        store.upsert("c", [VectorPoint("00000000-0000-0000-0000-000000000001", [1.0, 0.0])])
        assert store.count("c") == 1
    finally:
        store.close()
    assert not owner.holds(owner.store_lock_file(vectors))


def test_separate_api_and_worker_processes_need_a_vector_store_server(data_dir: Path) -> None:
    env = plain_env(data_dir)
    for command in (["api"], ["worker"]):
        refused = sift(env, *command)
        assert refused.returncode == 2, refused.stderr
        assert "SIFT_QDRANT_URL" in refused.stderr and "sift up" in refused.stderr
    many = sift(env, "worker", "--own-store", "--pool", "prefork", "--concurrency", "2")
    assert many.returncode == 2 and "--concurrency=1" in many.stderr
    assert not (data_dir / "qdrant").exists()


def test_a_second_sift_up_on_a_data_dir_in_use_exits_at_once_naming_the_holder(data_dir: Path) -> None:
    holder = holding(f"owner.acquire(owner.lock_file_for(Path({str(data_dir)!r})))")
    try:
        started = time.monotonic()
        refused = sift(plain_env(data_dir), "up")
        assert time.monotonic() - started < 10
        assert refused.returncode == 1, refused.stderr
        assert f"pid={holder.pid}" in refused.stderr and "SIFT_QDRANT_URL" in refused.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_second_worker_on_one_embedded_store_exits_within_10_s_and_the_first_keeps_working(
    data_dir: Path, pg_url: str, redis_url: str
) -> None:
    d = Deployment(settings_for(data_dir, database_url=pg_url, broker_url=redis_url, batch_size=32))
    try:
        first = d.start_worker()
        d.ingest(100, prefix="a")
        d.wait(lambda: d.counts().get("done", 0) >= 32, 180, "the first worker at work")
        started = time.monotonic()
        second = d.start_worker()
        assert second.wait(timeout=10) == 1
        assert time.monotonic() - started < 10
        log = (data_dir / "worker-1.log").read_text()
        assert f"pid={first.pid}" in log and "SIFT_QDRANT_URL" in log, log
        d.ingest(100, prefix="b")
        d.wait(lambda: d.counts() == {"done": 200}, 180, "200 events done by the first worker")
        assert first.poll() is None
    finally:
        d.stop_workers()
        d.db.dispose()
    assert d.points() == 200


@pytest.mark.parametrize("command", [["up"], ["api"], ["worker"], ["worker", "--own-store"], ["beat"]])
def test_every_process_refuses_the_embedded_defaults_in_production_naming_each_setting(
    data_dir: Path, command: list[str]
) -> None:
    refused = sift(plain_env(data_dir, SIFT_ENV="production", SIFT_BROKER_URL="redis://127.0.0.1:9/0"), *command)
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "SIFT_DATABASE_URL" in message and "SIFT_QDRANT_URL" in message, message
    assert "SIFT_BROKER_URL" not in message  # set: only what is missing is named
    assert not (data_dir / "sift.db").exists()


def test_celery_started_directly_refuses_the_embedded_defaults_in_production(data_dir: Path) -> None:
    env = plain_env(data_dir, SIFT_ENV="production")
    refused = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool=solo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "SIFT_DATABASE_URL" in refused.stdout + refused.stderr
