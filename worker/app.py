"""The Celery app: config, queues, routes, and per-process set-up.

Start a worker with `sift worker` (or `celery -A worker.app worker`). GPU workers take the
`ingest` and `train` queues with the solo pool, one process per GPU; CPU workers may use
prefork, and each child gets torch threads = its share of the cores.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_shutdown

from services.config import get_settings
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
    return app


@worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # A forked child must not reuse the parent's pooled connections; the model is loaded
    # lazily in the child, so no CUDA context ever crosses a fork.
    forget_inherited_runtime()


@worker_shutdown.connect
def _close(**_: Any) -> None:
    get_runtime().close()


app = create_app()
