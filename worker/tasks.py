"""Thin tasks: ids in, domain services do the work. Every body is idempotent."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
from celery import Task, shared_task

from services import logs
from services.alerts import drift, webhooks
from services.alerts import flow as alert_flow
from services.config import DEFAULT_TENANT, get_settings
from services.enqueue import Enqueuer, sender_for
from services.errors import BrokerUnavailable, InvalidInput, Transient
from services.events import accept as ingest
from services.matching import calibration as match_calibration
from services.matching.refresh import refresh_suggestions
from services.runtime import Runtime, get_runtime
from services.task_names import (
    ALERTS_PROCESS,
    ALERTS_SWEEP,
    BUILD_VECTOR_INDEXES,
    CALIBRATE_MATCH,
    DRIFT_CHECK,
    PROCESS_EVENTS,
    REFRESH_SUGGESTIONS,
    REINDEX,
    SWEEP,
    TRAIN_CHECK,
    TRAIN_RUN,
    WEBHOOK_DELIVER,
)
from services.training import schedule as training_schedule

log = logging.getLogger(__name__)


@shared_task(bind=True, name=PROCESS_EVENTS, max_retries=8)
def process_events(self: Task, event_ids: list[str], tenant: str = DEFAULT_TENANT) -> dict[str, int]:
    """Encode, store and index a batch of a tenant's events; retries with backoff while a dependency is down.
    Its log lines carry a batch id of their own."""
    try:
        with logs.bound(batch_id=logs.new_id(), tenant=tenant):
            return get_runtime().for_tenant(tenant).batch.run(event_ids, send=sender_for(self.app))
    except Transient as exc:
        countdown = min(60, 2**self.request.retries)
        log.warning("batch of %d events: %s; retry in %ss", len(event_ids), exc, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(bind=True, name=ALERTS_PROCESS, soft_time_limit=120, max_retries=8)
def alerts_process(self: Task, event_ids: list[str], tenant: str = DEFAULT_TENANT) -> dict[str, object]:
    """Link, evaluate and notify for a tenant's processed news; idempotent."""
    runtime = get_runtime().for_tenant(tenant)
    try:
        return alert_flow.process_news(
            runtime.db.session_scope,
            event_ids=event_ids,
            settings=runtime.settings,
            now=datetime.now(UTC),
            send=sender_for(self.app),
        )
    except Transient as exc:
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc


@shared_task(bind=True, name=ALERTS_SWEEP, soft_time_limit=120)
def alerts_sweep(self: Task) -> dict[str, object]:
    """Beat: every tenant's alert re-evaluation and due webhook deliveries."""
    changes, sent = 0, 0
    for runtime in _every_tenant():
        made, due = alert_flow.sweep(
            runtime.db.session_scope, settings=runtime.settings, now=datetime.now(UTC), send=sender_for(self.app)
        )
        changes, sent = changes + made, sent + due
    return {"changes": changes, "deliveries_sent": sent}


@shared_task(bind=True, name=WEBHOOK_DELIVER, soft_time_limit=60)
def webhook_deliver(self: Task, delivery_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """POST one of a tenant's deliveries (signed); a failure is recorded with its next attempt (the sweep sends it)."""
    runtime = get_runtime().for_tenant(tenant)
    with httpx.Client() as client:
        return webhooks.deliver(
            runtime.db.session_scope, delivery_id=delivery_id, settings=runtime.settings, client=client
        )


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
    """Execute a tenant's queued training run; the domain sends what follows (re-index, calibration)."""
    outcome = get_runtime().for_tenant(tenant).trainer.run(run_id, send=sender_for(self.app))
    return {"version": outcome.version, "promoted": outcome.promoted, "reindex_job": outcome.reindex_job}


@shared_task(bind=True, name=REINDEX, soft_time_limit=120)
def reindex_step(self: Task, job_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """Re-embed the next pages of a tenant's re-index job (about 20 s of work); the next step is
    sent as a new task, so ingest batches are served in between; the cursor in SQL makes every step resumable."""
    return get_runtime().for_tenant(tenant).reindexer.run_step(job_id, send=sender_for(self.app), max_seconds=20)


@shared_task(bind=True, name=CALIBRATE_MATCH, soft_time_limit=600)
def calibrate_match(self: Task, tenant: str = DEFAULT_TENANT) -> dict[str, object]:
    """Fit a tenant's match confidence for its served models; too few labeled tickets is not an error."""
    try:
        row = match_calibration.calibrate(get_runtime().for_tenant(tenant).matcher)
    except InvalidInput as exc:
        log.info("match calibration skipped: %s", exc.message)
        return {"calibrated": False, "reason": exc.message}
    finally:  # new models or a new threshold: stored suggestions are matched again
        _refresh_later(self, tenant)
    return {"calibrated": True, "id": row.id, **row.metrics}


def _refresh_later(task: Task, tenant: str) -> None:
    try:
        sender_for(task.app)(REFRESH_SUGGESTIONS, tenant)
    except BrokerUnavailable:  # the next FAQ write or calibration asks again
        log.warning("suggestions not refreshed: broker unavailable")


@shared_task(bind=True, name=REFRESH_SUGGESTIONS, soft_time_limit=600)
def refresh_ticket_suggestions(self: Task, tenant: str = DEFAULT_TENANT) -> dict[str, int]:
    """Match a tenant's recent tickets again after its FAQ base or models changed (idempotent)."""
    runtime = get_runtime().for_tenant(tenant)
    s = runtime.settings
    if s.suggestion_refresh_s <= 0 or s.suggestion_refresh_max <= 0:
        return {"tickets": 0, "changed": 0}
    return refresh_suggestions(
        matcher=runtime.matcher,
        sessions=runtime.db.session_scope,
        window_s=s.suggestion_refresh_s,
        limit=s.suggestion_refresh_max,
        now=datetime.now(UTC),
    )


@shared_task(bind=True, name=TRAIN_CHECK, soft_time_limit=120)
def train_check(self: Task) -> dict[str, object]:
    """Beat, for every tenant: start runs for tasks with enough new labels; resume re-index jobs;
    catch up switched ones."""
    return {
        runtime.tenant: training_schedule.check(
            runtime.db.session_scope,
            reindexer=runtime.reindexer,
            trainer=runtime.trainer,
            settings=runtime.settings,
            send=sender_for(self.app),
        )
        for runtime in _every_tenant()
    }


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
