"""The Celery app: config, queues, routes, and per-process set-up.

Start a worker with `sift worker` (or `celery -A worker.app worker`). GPU workers take the
`ingest` and `train` queues with the solo pool, one process per GPU; CPU workers may use
prefork, and each child gets torch threads = its share of the cores.
"""

from __future__ import annotations

import gc
import logging
from contextlib import suppress
from contextvars import Token
from typing import Any

from celery import Celery
from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_shutdown,
)
from celery.utils.log import current_process_index

from services import logs, metrics
from services.config import get_settings
from services.embedding.encoder import import_libraries
from services.enqueue import make_celery
from services.runtime import forget_inherited_runtime, get_runtime
from worker.schedule import beat_schedule

log = logging.getLogger(__name__)


def create_app() -> Celery:
    """The worker's Celery app: the shared config plus worker-only settings and the schedule."""
    settings = get_settings()
    app = make_celery(settings, name="sift")
    app.conf.update(
        # Each message already carries a batch of ids: take one at a time so a lost worker
        # holds back as little as possible.
        worker_prefetch_multiplier=1,
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_soft_time_limit_s + 60,
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
    )
    app.autodiscover_tasks(["worker"], related_name="tasks", force=True)
    metrics.show_tenant_names(settings.metrics_tenant_labels)
    return app


@worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # A forked child must not reuse the parent's pooled connections; the model is loaded
    # lazily in the child, so no CUDA context ever crosses a fork.
    forget_inherited_runtime()
    _serve_metrics()


@worker_init.connect
def _serve_main_metrics(**_: Any) -> None:
    _refuse_embedded_defaults_in_production()
    _check_training_limits()
    _serve_metrics()


@worker_init.connect
def _import_model_libraries(**_: Any) -> None:
    # Before the pool forks: a child forked to replace a dead one then loads only the model (1 s)
    # before it takes the dead child's work over, not torch and sentence-transformers too (15 s on
    # a loaded machine). No model is loaded here and no kernel runs, so no thread pool crosses a fork.
    took = import_libraries()
    log.info("encoder libraries imported in %.1f s, before any pool child is forked", took)
    # What is imported now (about 570,000 objects) lives as long as the process: out of the
    # collector's sight, a full collection no longer pauses a worker's batches for 0.2-0.5 s, and
    # forked children do not copy the pages the collector would touch (docs/decisions/gc-freeze.md).
    gc.freeze()


def _check_training_limits() -> None:
    # The budget, the train task's limit and the broker's re-delivery must fit inside each other;
    # a mismatch is survivable (the run's lease), so it is a warning with the fix, not a refusal.
    from services.training.lease import time_limit_problems
    from worker.tasks import TRAIN_LIMIT_S

    s = get_settings()
    redelivers = s.celery_broker_url.split(":", 1)[0] in ("redis", "rediss", "sqs")
    for problem in time_limit_problems(
        budget_s=s.train_budget_s,
        task_limit_s=TRAIN_LIMIT_S,
        visibility_timeout_s=s.visibility_timeout_s if redelivers else None,
    ):
        log.warning("training limits: %s", problem)


@beat_init.connect
def _beat_checks(**_: Any) -> None:
    _refuse_embedded_defaults_in_production()


def _refuse_embedded_defaults_in_production() -> None:
    # `celery -A worker.app worker|beat` bypasses the sift commands' checks: the same rule here.
    try:
        get_settings().check_secrets()
    except ValueError as exc:
        log.critical("%s", exc)
        raise SystemExit(2) from exc


def _serve_metrics() -> None:
    # With SIFT_METRICS_PORT, every worker process serves its own /metrics: the main process (the
    # one that runs tasks with the solo or threads pool) on the port, prefork child i on port + i.
    port = get_settings().metrics_port
    if port:
        metrics.serve_worker_metrics(port + (current_process_index(base=1) or 0))


@worker_shutdown.connect
def _close(**_: Any) -> None:
    get_runtime().close()


@setup_logging.connect
def _logs(**_: Any) -> None:
    # A receiver here means Celery sets up no logging of its own (worker, beat, `celery -A`):
    # every Sift process logs as services/logs.py says.
    logs.setup(get_settings())


_task_logs: dict[str, Token[Any]] = {}


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    # Every line a task writes carries its Celery task id and name.
    if task_id:
        _task_logs[task_id] = logs.bind(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _task_logs.pop(task_id or "", None)
    if token is not None:
        with suppress(ValueError):  # set in another context: nothing of ours to undo here
            logs.unbind(token)


app = create_app()
