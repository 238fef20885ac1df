"""Readiness checks with a deadline: a hanging dependency makes a check fail, not the caller wait.

Each check runs in a daemon thread of its own, and at most one run per name is in flight: while a
dependency hangs, later probes wait on that same run instead of starting another, so an hour of
hanging costs one thread per check, not one per probe (and a hung thread never holds up exit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING

from services.errors import Transient, public_message

if TYPE_CHECKING:
    from services.runtime import Runtime

log = logging.getLogger(__name__)
Check = Callable[[], None]


class NotReady(Exception):
    """A check's plain answer ("model still loading"), reported without an exception name."""


class Checks:
    """Runs named checks in parallel, at most one in flight per name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[Future[None], float]] = {}
        self._said: dict[str, str] = {}  # the last full failure logged per check

    def start(self, checks: Mapping[str, Check]) -> dict[str, Future[None]]:
        """A future per check: the run still in flight under that name, or a new one."""
        futures: dict[str, Future[None]] = {}
        with self._lock:
            for name, check in checks.items():
                running = self._running.get(name)
                if running is None or running[0].done():
                    running = self._running[name] = (_spawn(name, check), time.monotonic())
                futures[name] = running[0]
        return futures

    def outcomes(self, futures: Mapping[str, Future[None]]) -> dict[str, str]:
        """'ok', the reason a check failed, or for how long it has not answered."""
        results: dict[str, str] = {}
        for name, future in futures.items():
            if not future.done():
                with self._lock:
                    started = self._running[name][1]
                results[name] = f"no answer after {time.monotonic() - started:.1f}s"
            elif (exc := future.exception()) is None:
                results[name] = "ok"
            elif isinstance(exc, NotReady):
                results[name] = str(exc)
            else:
                # The answer names the failing dependency, never its address: driver errors name
                # hosts and ports, so the full text goes to the log (once per change).
                results[name] = public_message(exc) if isinstance(exc, Transient) else f"{type(exc).__name__}"
                full = f"{type(exc).__name__}: {exc}"[:500]
                if self._said.get(name) != full:
                    self._said[name] = full
                    log.warning("readiness check %s failed: %s", name, full)
        return results


# Checks whose failure leaves the process able to serve: /readyz says "degraded" (200), not 503.
DEGRADING = ("backlog", "vector writes")


def verdict(results: Mapping[str, str]) -> str:
    """ready, degraded (only a DEGRADING check fails) or not ready."""
    failing = {name for name, outcome in results.items() if outcome != "ok"}
    if failing - set(DEGRADING):
        return "not ready"
    return "degraded" if failing else "ready"


def oldest_unfinished_age(runtime: Runtime, *, now: float | None = None) -> float | None:
    """Seconds since the oldest event still queued or processing arrived, over every tenant; None when none waits."""
    from services.db import events as repo

    oldest = []
    for tenant in dict.fromkeys([runtime.root.tenant, *runtime.tenant_ids()]):
        with runtime.for_tenant(tenant).db.session_scope() as session:
            if (received := repo.oldest_unfinished(session)) is not None:
                oldest.append(received.timestamp())
    return ((now or time.time()) - min(oldest)) if oldest else None


def readiness_checks(*, runtime: Runtime, ping_broker: Check, warmed: Callable[[], bool]) -> dict[str, Check]:
    """The checks behind /readyz: database, broker, model loaded and the process warmed up, vector
    store; and, degrading only, a backlog older than SIFT_STALE_AFTER_S and vector writes that fail."""

    def model() -> None:
        if not runtime.model_loaded():
            raise NotReady("model still loading")
        if not warmed():
            raise NotReady("warming up (the feeds' cache)")

    def vectors() -> None:
        if not runtime.model_loaded():  # the store needs the model's dimension to create collections
            raise NotReady("waiting for the model")
        runtime.store.ping()

    def backlog() -> None:
        age, limit = oldest_unfinished_age(runtime), runtime.settings.stale_after_s
        if age is not None and age > limit:
            raise NotReady(f"the oldest unfinished event arrived {age:.0f} s ago (SIFT_STALE_AFTER_S={limit:g})")

    def vector_writes() -> None:
        if (failure := runtime.vector_write_failure()) is not None:
            raise NotReady(f"the last vector write failed {time.time() - failure[0]:.0f} s ago")

    return {
        "database": runtime.db.ping,
        "broker": ping_broker,
        "model": model,
        "vectors": vectors,
        "backlog": backlog,
        "vector writes": vector_writes,
    }


def _spawn(name: str, check: Check) -> Future[None]:
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()  # a waiter that gives up cannot cancel it

    def run() -> None:
        try:
            check()
        except BaseException as exc:  # reported, never raised: this thread has no caller
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=run, name=f"sift-health-{name}", daemon=True).start()
    return future
