"""Real worker processes on the real Redis and PostgreSQL of this machine, with embedded Qdrant:
events flow to done; a re-send changes nothing; a worker killed with SIGKILL mid-batch and
restarted still leaves every event done exactly once in SQL and in Qdrant; a running worker
serves a newly promoted model without a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.classify import tasks
from services.config import Settings
from services.db import events as repo
from services.db.migrate import upgrade
from services.db.models import Event
from services.db.session import Database
from services.embedding.encoder import Encoder
from services.enqueue import Enqueuer, make_celery, queue_depths
from services.events import accept as ingest
from services.runtime import reset_runtime
from services.training import labels, registry
from services.vectors import open_store
from services.vectors.schema import collection_for
from tests.conftest import settings_for

LIMITS = ingest.Limits(max_events=1000, max_text_chars=10_000)


class Deployment:
    """Settings, a database handle and worker processes started as `sift worker` would be."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.sqlalchemy_url)
        self.workers: list[subprocess.Popen[bytes]] = []
        upgrade(settings.sqlalchemy_url)

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
        env.update(
            SIFT_DATA_DIR=str(s.data_dir),
            SIFT_DATABASE_URL=s.sqlalchemy_url,
            SIFT_BROKER_URL=s.celery_broker_url,
            SIFT_BATCH_SIZE=str(s.batch_size),
            SIFT_SWEEP_AFTER_S=str(s.sweep_after_s),
            SIFT_SWEEP_INTERVAL_S=str(s.sweep_interval_s),
            SIFT_MODEL_RELOAD_S=str(s.model_reload_s),
            SIFT_LOG_LEVEL="INFO",
        )
        return env

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.settings.data_dir / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            # The embedded vector store: this worker is its one process (a separate API would need a server).
            [sys.executable, "-m", "services.cli.app", "worker", "--own-store", *extra],
            env=self.env(),
            stdout=log,
            stderr=log,
        )
        self.workers.append(proc)
        return proc

    def ingest(self, n: int, prefix: str = "ev") -> list[str]:
        events = [
            ingest.EventIn(id=f"{prefix}-{i}", kind="ticket", text=f"I lost my card number {i}, what now?")  # type: ignore[call-arg]
            for i in range(n)
        ]
        with self.db.session_scope() as s:
            accepted = ingest.accept(s, events=events, limits=LIMITS)
        Enqueuer(make_celery(self.settings, name="test"), batch_size=self.settings.batch_size).send(accepted.queued)
        return accepted.ids

    def counts(self) -> dict[str, int]:
        with self.db.session_scope() as s:
            return repo.counts(s).get("ticket", {})

    def wait(self, predicate: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.2)
        logs = "\n".join(p.read_text()[-3000:] for p in self.settings.data_dir.glob("worker-*.log"))
        pytest.fail(f"timed out waiting for {what}; counts={self.counts()}\n{logs}")

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers.clear()

    def points(self) -> int:
        store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=self.settings.vectors_dir)
        try:
            return store.count(collection_for("ticket", prefix=self.settings.collection_prefix))
        finally:
            store.close()


@pytest.fixture
def deployment(data_dir: Path, pg_url: str, redis_url: str) -> Iterator[Deployment]:
    d = Deployment(settings_for(data_dir, database_url=pg_url, broker_url=redis_url, batch_size=32))
    yield d
    d.stop_workers()
    d.db.dispose()


def test_events_flow_to_done_and_resending_changes_nothing(deployment: Deployment) -> None:
    deployment.start_worker()
    ids = deployment.ingest(300)
    deployment.wait(lambda: deployment.counts() == {"done": 300}, 180, "300 events done")
    assert deployment.ingest(300) == ids  # the same ids again: nothing queued
    time.sleep(1)
    assert deployment.counts() == {"done": 300}
    depths = queue_depths(make_celery(deployment.settings, name="test"), ["ingest", "alerts"])
    assert depths == {"ingest": 0, "alerts": 0}  # read from Redis; alerts never held a message
    deployment.stop_workers()
    assert deployment.points() == 300


def test_sigkill_mid_batch_loses_and_duplicates_nothing(data_dir: Path, pg_url: str, redis_url: str) -> None:
    d = Deployment(
        settings_for(
            data_dir, database_url=pg_url, broker_url=redis_url, batch_size=64, sweep_after_s=3, sweep_interval_s=1
        )
    )
    try:
        first = d.start_worker()
        d.ingest(640)
        d.wait(lambda: d.counts().get("done", 0) > 0 and d.counts().get("processing", 0) > 0, 120, "a batch in flight")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = d.counts()
        assert killed_at.get("done", 0) < 640, "the worker finished before it was killed; the test proved nothing"
        d.start_worker("--beat")  # the restarted worker runs beat too, whose sweep re-sends what was lost
        d.wait(lambda: d.counts() == {"done": 640}, 240, "all 640 done after the restart")
        d.stop_workers()
        with d.db.session_scope() as s:
            assert repo.counts(s) == {"ticket": {"done": 640}}
        assert d.points() == 640
    finally:
        d.stop_workers()
        d.db.dispose()


def test_a_running_worker_serves_a_newly_promoted_version(
    data_dir: Path, pg_url: str, redis_url: str, encoder: Encoder
) -> None:
    d = Deployment(settings_for(data_dir, database_url=pg_url, broker_url=redis_url, batch_size=32, model_reload_s=1))
    runtime = reset_runtime(d.settings)
    runtime._made["encoder"] = encoder
    try:
        with d.db.session_scope() as s:
            tasks.add_task(s, name="support", kind="ticket", labels=[], open_labels=True)
            items = [(f"my {w} card has not arrived yet", "card_arrival") for w in "abcdefghij"]
            items += [(f"please refund the {w} I sent back", "refund") for w in "abcdefghij"]
            labels.record(
                s,
                labels=[labels.LabelIn(text=t, task="support", label=y) for t, y in items],
                max_labels=100,
                max_text_chars=1000,
            )
        d.start_worker()
        d.ingest(5, prefix="before")
        d.wait(lambda: d.counts().get("done", 0) >= 25, 120, "the first events done")
        with d.db.session_scope() as s:
            assert s.get(Event, "before-0").predictions["support"]["zero_shot"] is True  # type: ignore[union-attr]
            run_id = registry.new_run(s, task="support").id
        outcome = runtime.trainer.execute(run_id)
        assert outcome.promoted
        time.sleep(1.5)  # SIFT_MODEL_RELOAD_S
        d.ingest(5, prefix="after")
        d.wait(lambda: d.counts().get("done", 0) >= 30, 120, "the later events done")
        with d.db.session_scope() as s:
            prediction = s.get(Event, "after-0").predictions["support"]  # type: ignore[union-attr]
        assert prediction["zero_shot"] is False and prediction["model_version"] == outcome.version
    finally:
        d.stop_workers()
        runtime.close()
        reset_runtime()
        d.db.dispose()
