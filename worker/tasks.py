"""Thin tasks: ids in, domain services do the work. Every body is idempotent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task, shared_task

from services import logs, metrics
from services.alerts import drift
from services.alerts import rules as alerts
from services.config import DEFAULT_TENANT, get_settings
from services.db import events as repo
from services.db.models import as_utc
from services.enqueue import (
    ALERTS_PROCESS,
    ALERTS_SWEEP,
    BUILD_VECTOR_INDEXES,
    CALIBRATE_MATCH,
    DRIFT_CHECK,
    PROCESS_EVENTS,
    REINDEX,
    SWEEP,
    TRAIN_CHECK,
    TRAIN_RUN,
    WEBHOOK_DELIVER,
    Enqueuer,
    send,
)
from services.errors import BrokerUnavailable, InvalidInput, Transient
from services.events import accept as ingest
from services.matching import calibration as match_calibration
from services.matching import faq
from services.runtime import Runtime, get_runtime
from services.training import registry, reindex

log = logging.getLogger(__name__)


@shared_task(bind=True, name=PROCESS_EVENTS, max_retries=8)
def process_events(self: Task, event_ids: list[str], tenant: str = DEFAULT_TENANT) -> dict[str, int]:
    """Encode, store and index a batch of a tenant's events; retries with backoff while a dependency is down."""
    try:
        return run_batch(
            event_ids, tenant=tenant, on_news=lambda ids: _send_quietly(self.app, ALERTS_PROCESS, ids, tenant)
        )
    except Transient as exc:
        countdown = min(60, 2**self.request.retries)
        log.warning("batch of %d events: %s; retry in %ss", len(event_ids), exc, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


def run_batch(
    event_ids: list[str], *, tenant: str = DEFAULT_TENANT, on_news: Callable[[list[str]], None] | None = None
) -> dict[str, int]:
    """The task body: claim (topping the batch up from the tenant's backlog), process, record; then
    hand the done news events to on_news (the alerts queue). Its log lines carry a batch id of their own."""
    with logs.bound(batch_id=logs.new_id(), tenant=tenant):
        return _run_batch(get_runtime().for_tenant(tenant), event_ids, on_news)


def _run_batch(runtime: Runtime, event_ids: list[str], on_news: Callable[[list[str]], None] | None) -> dict[str, int]:
    s = runtime.settings
    pipeline = runtime.pipeline
    started = time.perf_counter()
    with runtime.db.session_scope() as session:
        batch = repo.claim(
            session, ids=event_ids, now=datetime.now(UTC), stale_after_s=s.sweep_after_s, limit=s.batch_size
        )
    if not batch:
        log.info("claimed none of %d events (done or taken meanwhile)", len(event_ids), extra={"event_ids": event_ids})
        return {"done": 0, "failed": 0}
    log.info("claimed %d events", len(batch), extra={"event_ids": [e.id for e in batch]})
    claimed = time.perf_counter()
    now = datetime.now(UTC)
    try:
        outcomes = pipeline.process(batch, now=now)
    except Transient:
        _release(runtime, [e.id for e in batch])
        raise
    processed = time.perf_counter()
    news = [e.id for e, o in zip(batch, outcomes, strict=True) if o.ok and e.kind == "news"]
    with runtime.db.session_scope() as session:
        repo.record(session, outcomes=outcomes, now=now)
        gone = set(repo.missing(session, ids=[o.event_id for o in outcomes if o.ok]))
        if news:  # linked in the commit that makes them done: a lost alerts message cannot lose links
            alerts.record_links(session, event_ids=news, settings=s, now=now)
    recorded = [(e.kind, o.ok, as_utc(e.received_at)) for e, o in zip(batch, outcomes, strict=True)]
    metrics.observe_outcomes(recorded, now=now)
    if gone:  # deleted meanwhile (DELETE /v1/items/{id}): the point just written must go too
        pipeline.drop_points([e for e in batch if e.id in gone])
    done = sum(o.ok for o in outcomes)
    if news and on_news is not None:
        on_news(news)
    _log_recorded(outcomes, started, claimed, processed)
    return {"done": done, "failed": len(outcomes) - done}


def _log_recorded(outcomes: list[repo.Outcome], started: float, claimed: float, processed: float) -> None:
    failed = [o.event_id for o in outcomes if not o.ok]
    log.info(
        "recorded %d events, %d failed: claim %.0f ms, encode+upsert %.0f ms, record %.0f ms",
        len(outcomes),
        len(failed),
        1000 * (claimed - started),
        1000 * (processed - claimed),
        1000 * (time.perf_counter() - processed),
        extra={"event_ids": [o.event_id for o in outcomes if o.ok], "failed_ids": failed},
    )


def _send_quietly(app: Any, name: str, *args: Any) -> None:
    # The events are recorded done: a lost notification only delays alerts until the beat sweep.
    try:
        send(app, name, *args)
    except BrokerUnavailable:
        log.warning("broker down: %s waits for the sweep", name)


@shared_task(bind=True, name=ALERTS_PROCESS, soft_time_limit=120, max_retries=8)
def alerts_process(self: Task, event_ids: list[str], tenant: str = DEFAULT_TENANT) -> dict[str, object]:
    """Link processed news to entities (the ingest batch did already: linking is idempotent),
    recount their buckets, evaluate the rules for them, and queue webhook deliveries for alerts
    raised or cleared; idempotent."""
    runtime = get_runtime().for_tenant(tenant)
    now = datetime.now(UTC)
    try:
        with runtime.db.session_scope() as session:
            entities = alerts.record_links(session, event_ids=event_ids, settings=runtime.settings, now=now)
            changes, deliveries = alerts.evaluate_and_notify(
                session, entities=entities, settings=runtime.settings, now=now
            )
    except Transient as exc:
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc
    for delivery_id in deliveries:
        _send_quietly(self.app, WEBHOOK_DELIVER, delivery_id, tenant)
    return {"entities": len(entities), "changes": len(changes), "deliveries": len(deliveries)}


@shared_task(bind=True, name=ALERTS_SWEEP, soft_time_limit=120)
def alerts_sweep(self: Task) -> dict[str, object]:
    """Beat: re-evaluate entities with open alerts or recent news (so a condition that passed
    clears, and an evaluation whose message was lost happens), and re-send webhook deliveries that
    are due (retries, or messages lost with a worker or the broker)."""
    from services.alerts import webhooks

    changes, sent = 0, 0
    for runtime in _every_tenant():
        now = datetime.now(UTC)
        since = now - timedelta(seconds=runtime.settings.alert_window_s)
        with runtime.db.session_scope() as session:
            entities = alerts.due_for_evaluation(session, since=since)
            made, _ = alerts.evaluate_and_notify(session, entities=entities, settings=runtime.settings, now=now)
            due = webhooks.due_deliveries(session, now=now)  # includes what was just queued
        for delivery_id in due:
            _send_quietly(self.app, WEBHOOK_DELIVER, delivery_id, runtime.tenant)
        changes, sent = changes + len(made), sent + len(due)
    return {"changes": changes, "deliveries_sent": sent}


@shared_task(bind=True, name=WEBHOOK_DELIVER, soft_time_limit=60)
def webhook_deliver(self: Task, delivery_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """POST one of a tenant's deliveries (signed); a failure is recorded with its next attempt (the sweep sends it)."""
    import httpx

    from services.alerts import webhooks

    runtime = get_runtime().for_tenant(tenant)
    with httpx.Client() as client:
        return webhooks.deliver(
            runtime.db.session_scope, delivery_id=delivery_id, settings=runtime.settings, client=client
        )


def _release(runtime: Runtime, ids: list[str]) -> None:
    # Best effort: if the database is down too, the events stay processing and the sweep re-sends them.
    try:
        with runtime.db.session_scope() as session:
            repo.release(session, ids=ids)
    except Transient:
        log.warning("could not release %d events; the sweep will re-send them", len(ids))


@shared_task(bind=True, name=SWEEP, soft_time_limit=60)
def sweep(self: Task) -> int:
    """Re-send every tenant's events whose message was lost (stuck queued or processing past the timeout)."""
    resent = 0
    for runtime in _every_tenant():
        s = runtime.settings
        with runtime.db.session_scope() as session:
            ids = ingest.due_for_resend(
                session, now=datetime.now(UTC), after_s=s.sweep_after_s, max_attempts=s.max_attempts, limit=10_000
            )
        if ids:
            Enqueuer(self.app, batch_size=s.batch_size).send(ids, tenant=runtime.tenant)
            log.info("sweep re-sent %d events of tenant %s", len(ids), runtime.tenant)
        resent += len(ids)
    return resent


TRAIN_LIMIT_S = int(get_settings().train_budget_s) + 900  # the run budget, and a margin for a wrong time estimate


@shared_task(bind=True, name=TRAIN_RUN, soft_time_limit=TRAIN_LIMIT_S, time_limit=TRAIN_LIMIT_S + 60)
def train_run(self: Task, run_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, object]:
    """Execute a tenant's queued training run; a promotion that changes the encoder starts a re-index."""
    runtime = get_runtime().for_tenant(tenant)
    outcome = runtime.trainer.execute(run_id)
    if outcome.reindex_job is not None:
        send(self.app, REINDEX, outcome.reindex_job, tenant)
    elif outcome.promoted and _kind_of_version(runtime, outcome.version) == faq.KIND:
        send(self.app, CALIBRATE_MATCH, tenant)  # a new intent head changes match scores
    return {"version": outcome.version, "promoted": outcome.promoted, "reindex_job": outcome.reindex_job}


@shared_task(bind=True, name=REINDEX, soft_time_limit=120)
def reindex_step(self: Task, job_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """Re-embed the next pages of a tenant's re-index job (about 20 s of work), then re-send itself,
    so ingest batches are served in between; the cursor in SQL makes every step resumable."""
    runtime = get_runtime().for_tenant(tenant)
    status = runtime.reindexer.step(job_id, max_seconds=20)
    if status == "running":
        send(self.app, REINDEX, job_id, tenant)
    elif status == "switched":
        with runtime.db.session_scope() as session:
            kind = reindex.get_job(session, job_id=job_id).kind
        if kind == faq.KIND:
            send(self.app, CALIBRATE_MATCH, tenant)  # the ticket encoder changed: so did match scores
    return status


def _kind_of_version(runtime: Runtime, version: str) -> str:
    with runtime.db.session_scope() as session:
        return registry.get_version(session, version=version).kind


@shared_task(bind=True, name=CALIBRATE_MATCH, soft_time_limit=600)
def calibrate_match(self: Task, tenant: str = DEFAULT_TENANT) -> dict[str, object]:
    """Fit a tenant's match confidence for its served models; too few labeled tickets is not an error."""
    try:
        row = match_calibration.calibrate(get_runtime().for_tenant(tenant).matcher)
    except InvalidInput as exc:
        log.info("match calibration skipped: %s", exc.message)
        return {"calibrated": False, "reason": exc.message}
    return {"calibrated": True, "id": row.id, **row.metrics}


@shared_task(bind=True, name=TRAIN_CHECK, soft_time_limit=120)
def train_check(self: Task) -> dict[str, object]:
    """Beat, for every tenant: start runs for tasks with enough new labels; resume re-index jobs;
    catch up switched ones."""
    out: dict[str, object] = {}
    for runtime in _every_tenant():
        s, tenant = runtime.settings, runtime.tenant
        started: list[str] = []
        with runtime.db.session_scope() as session:
            for task in registry.due_tasks(session, min_new_labels=s.train_min_new_labels):
                started.append(registry.new_run(session, task=task, trigger="schedule").id)
            running, recent = reindex.jobs_to_resume(session, now=datetime.now(UTC))
        for run_id in started:
            send(self.app, TRAIN_RUN, run_id, tenant)
        for job_id in running:
            send(self.app, REINDEX, job_id, tenant)
        caught_up = sum(runtime.reindexer.catch_up(job_id) for job_id in recent)
        out[tenant] = {"runs": started, "reindex_resumed": running, "caught_up": caught_up}
    return out


@shared_task(bind=True, name=DRIFT_CHECK, soft_time_limit=120)
def drift_check(self: Task) -> dict[str, object]:
    """Beat, for every tenant: measure each task's drift, export the gauges, open or clear model_drift alerts."""
    out: dict[str, object] = {}
    for runtime in _every_tenant():
        with runtime.db.session_scope() as session:
            results = drift.check(session, store=runtime.store, settings=runtime.settings, now=datetime.now(UTC))
        out[runtime.tenant] = {r.task: r.score for r in results}
    return out


# Its own hard limit: the app-wide one (SIFT_TASK_SOFT_TIME_LIMIT_S + 60) is below this soft limit,
# and Celery refuses a task whose soft limit is past its hard one.
@shared_task(bind=True, name=BUILD_VECTOR_INDEXES, soft_time_limit=3600, time_limit=3660)
def build_vector_indexes(self: Task) -> dict[str, int]:
    """Beat: build the HNSW index of embedded collections with enough points outside one."""
    return get_runtime().build_vector_indexes()


def _every_tenant() -> list[Runtime]:
    """The runtime of every tenant, for the beat's sweeps."""
    root = get_runtime()
    return [root.for_tenant(tenant) for tenant in root.tenant_ids()]
