"""Thin tasks: ids in, domain services do the work. Every body is idempotent."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from celery import Task, shared_task

from services import ingest
from services.db import events as repo
from services.enqueue import PROCESS_EVENTS, SWEEP, Enqueuer
from services.errors import Transient
from services.runtime import get_runtime

log = logging.getLogger(__name__)


@shared_task(bind=True, name=PROCESS_EVENTS, max_retries=8)
def process_events(self: Task, event_ids: list[str]) -> dict[str, int]:
    """Encode, store and index a batch of events; retries with backoff while a dependency is down."""
    try:
        return run_batch(event_ids)
    except Transient as exc:
        countdown = min(60, 2**self.request.retries)
        log.warning("batch of %d events: %s; retry in %ss", len(event_ids), exc, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


def run_batch(event_ids: list[str]) -> dict[str, int]:
    """The task body: claim (topping the batch up from the backlog), process, record."""
    runtime = get_runtime()
    s = runtime.settings
    pipeline = runtime.pipeline
    started = time.perf_counter()
    with runtime.db.session_scope() as session:
        batch = repo.claim(
            session, ids=event_ids, now=datetime.now(UTC), stale_after_s=s.sweep_after_s, limit=s.batch_size
        )
    if not batch:
        return {"done": 0, "failed": 0}
    claimed = time.perf_counter()
    now = datetime.now(UTC)
    try:
        outcomes = pipeline.process(batch, now=now)
    except Transient:
        _release([e.id for e in batch])
        raise
    processed = time.perf_counter()
    with runtime.db.session_scope() as session:
        repo.record(session, outcomes=outcomes, now=now)
    done = sum(o.ok for o in outcomes)
    log.info(
        "batch of %d: claim %.0f ms, encode+upsert %.0f ms, record %.0f ms",
        len(batch),
        1000 * (claimed - started),
        1000 * (processed - claimed),
        1000 * (time.perf_counter() - processed),
    )
    return {"done": done, "failed": len(outcomes) - done}


def _release(ids: list[str]) -> None:
    # Best effort: if the database is down too, the events stay processing and the sweep re-sends them.
    try:
        with get_runtime().db.session_scope() as session:
            repo.release(session, ids=ids)
    except Transient:
        log.warning("could not release %d events; the sweep will re-send them", len(ids))


@shared_task(bind=True, name=SWEEP, soft_time_limit=60)
def sweep(self: Task) -> int:
    """Re-send events whose message was lost (stuck queued or processing past the timeout)."""
    runtime = get_runtime()
    s = runtime.settings
    with runtime.db.session_scope() as session:
        ids = ingest.due_for_resend(
            session, now=datetime.now(UTC), after_s=s.sweep_after_s, max_attempts=s.max_attempts, limit=10_000
        )
    if ids:
        Enqueuer(self.app, batch_size=s.batch_size).send(ids)
        log.info("sweep re-sent %d events", len(ids))
    return len(ids)
