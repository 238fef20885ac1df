"""The one way into the broker: tasks are sent by name, so the API and the CLI enqueue without
importing the worker, and the domain never needs Celery.

The broker carries only event ids; the SQL row is the source of truth. A publish that fails
leaves the events `queued`, and the beat sweep sends them again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.entity import Queue
from kombu.exceptions import ChannelError

from services.config import DEFAULT_TENANT, QUEUES, Settings
from services.errors import BrokerUnavailable
from services.task_names import (
    PROCESS_EVENTS,
    Sender,
)

log = logging.getLogger(__name__)

FILESYSTEM_TRANSPORT = "services.broker_fs:Transport"


def sender_for(app: Celery) -> Sender:
    """A sender that sends tasks by name through app (raises BrokerUnavailable when it is down)."""
    return functools.partial(send, app)


def send(app: Celery, name: str, *args: Any) -> None:
    """Send one task by name (routed by SIFT_ROUTES); raises BrokerUnavailable when the broker is down."""
    try:
        app.send_task(name, args=list(args), retry=True, retry_policy={"max_retries": 2})
    except Exception as exc:  # kombu raises OperationalError and friends: all mean "not now"
        raise BrokerUnavailable(f"broker unavailable: {exc}") from exc


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration shared by producers (API, CLI) and workers."""
    config: dict[str, Any] = {
        "broker_url": settings.celery_broker_url,
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "ingest",
        "task_routes": {pattern: {"queue": queue} for pattern, queue in settings.routes.items()},
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # A task's message is acked after it finished; a worker lost mid-task gets it re-delivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "broker_transport_options": _transport_options(settings),
        "broker_transport": FILESYSTEM_TRANSPORT if settings.celery_broker_url.startswith("filesystem") else None,
        "timezone": "UTC",
    }
    return config


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.celery_broker_url.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("out", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "out"),
            "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    # Redis re-delivers an unacked message after this long; our tasks are idempotent, so a
    # duplicate is harmless, and a lost worker's batch is also picked up by the sweep.
    return {"visibility_timeout": settings.visibility_timeout_s, "max_retries": 3}


def make_celery(settings: Settings, name: str = "sift") -> Celery:
    """A Celery app configured for Sift (the worker adds its tasks to the same config)."""
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


class Enqueuer:
    """Sends batches of event ids to the ingest queue."""

    def __init__(self, app: Celery, *, batch_size: int) -> None:
        self.app = app
        self.batch_size = batch_size

    def send(self, ids: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> None:
        """Publish a tenant's ids in chunks of batch_size; raises BrokerUnavailable when the broker is down."""
        try:
            for start in range(0, len(ids), self.batch_size):
                chunk = list(ids[start : start + self.batch_size])
                sent = self.app.send_task(
                    PROCESS_EVENTS, args=[chunk, tenant], retry=True, retry_policy={"max_retries": 2}
                )
                # The task id is what the worker's lines carry: the link from an event to its batch.
                log.info("published %d events", len(chunk), extra={"event_ids": chunk, "published_task_id": sent.id})
        except Exception as exc:  # kombu raises OperationalError and friends: all mean "not now"
            raise BrokerUnavailable(f"broker unavailable: {exc}") from exc


class CoalescingEnqueuer:
    """Gathers ids from many requests and publishes them together, up to batch_size ids or
    after wait_ms, so a stream of single-event requests still reaches the worker as batches
    (one broker message per batch, not per event)."""

    def __init__(self, enqueuer: Enqueuer, *, wait_ms: int) -> None:
        self._enqueuer = enqueuer
        self._wait = wait_ms / 1000
        self._pending: list[tuple[str, str]] = []  # (tenant, event id)
        self._oldest = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sift-enqueue", daemon=True)
        self._thread.start()

    def submit(self, ids: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> None:
        """Queue a tenant's ids for publishing (returns at once)."""
        if not ids:
            return
        with self._cond:
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.extend((tenant, i) for i in ids)
            self._cond.notify()

    def _take(self) -> list[tuple[str, str]] | None:
        with self._cond:
            while True:
                if self._pending and (
                    len(self._pending) >= self._enqueuer.batch_size
                    or time.monotonic() - self._oldest >= self._wait
                    or self._closed
                ):
                    batch, self._pending = self._pending, []
                    return batch
                if self._closed:
                    return None
                timeout = None if not self._pending else max(0.0, self._wait - (time.monotonic() - self._oldest))
                self._cond.wait(timeout)

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            by_tenant: dict[str, list[str]] = {}
            for tenant, event_id in batch:
                by_tenant.setdefault(tenant, []).append(event_id)
            for tenant, ids in by_tenant.items():
                try:
                    self._enqueuer.send(ids, tenant=tenant)
                except BrokerUnavailable as exc:
                    # The rows are committed as queued; the sweep re-sends them once the broker is back.
                    log.warning("could not enqueue %d events, the sweep will: %s", len(ids), exc)

    def close(self) -> None:
        """Publish what is pending, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)


def ping(app: Celery, *, timeout_s: float = 1.0) -> None:
    """Raise unless the broker answers (a Redis connection PINGs the server when it opens)."""
    with _probe(app, timeout_s) as conn:
        conn.ensure_connection(max_retries=0)


def _probe(app: Celery, timeout_s: float) -> Any:
    # A fresh connection that gives up after timeout_s at connect and at every read, and is never
    # retried here: a hung broker must not hang a probe or GET /v1/stats (redis-py still retries
    # a timed-out command a few times on its own).
    redis = str(app.conf.broker_url).startswith(("redis", "rediss", "sentinel"))
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s} if redis else {}
    return app.connection_for_write(connect_timeout=timeout_s, transport_options=options)


def queue_depths(app: Celery, queues: Sequence[str]) -> dict[str, int | None]:
    """Messages waiting in each queue, read from the broker; None where it does not answer."""
    depths: dict[str, int | None] = {}
    try:
        with _probe(app, 1.0) as conn:
            conn.ensure_connection(max_retries=0)
            channel = conn.default_channel
            for name in queues:
                try:
                    depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError as exc:  # a queue nothing was ever sent to does not exist yet
                    depths[name] = 0 if "NOT_FOUND" in str(exc) else None
                except Exception:
                    depths[name] = None
    except Exception as exc:
        log.warning("broker did not answer for queue depths: %s", exc)
        depths = {name: None for name in queues}
    return depths
