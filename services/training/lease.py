"""A training run's lease: one process trains a run at a time, and a run whose trainer died can be
taken over.

A message that starts a run may arrive twice (the broker re-delivers an unacked message after its
visibility timeout, or a duplicate is sent). The process that starts the run takes a lease on its
row (holder and expiry) with a conditional UPDATE, and a heartbeat thread extends it while the run
trains; a second message for a run whose lease is live exits without training. A lease that was
not extended for LEASE_S (the trainer died) may be taken again. `run_to_end` is how every kind of
run (classifiers, recommend) trains under its heartbeat and ends succeeded or failed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import or_, update

from services.db.models import TrainingRun
from services.training.registry import fail_run, finish_run

log = logging.getLogger(__name__)

LEASE_S = 120.0  # a live trainer extends its lease every LEASE_S / 4
HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def take(session: Any, *, run_id: str, now: datetime, lease_s: float = LEASE_S) -> bool:
    """Start the run under this process's lease: True when it was queued, or running under a lease
    that expired (its trainer died); False when another process holds a live lease or it ended."""
    holder = f"{HOLDER}:{threading.get_ident()}"
    taken = session.execute(
        update(TrainingRun)
        .where(
            TrainingRun.id == run_id,
            or_(
                TrainingRun.status == "queued",
                (TrainingRun.status == "running")
                & or_(TrainingRun.lease_expires_at.is_(None), TrainingRun.lease_expires_at < now),
            ),
        )
        .values(
            status="running", lease_holder=holder, lease_expires_at=now + timedelta(seconds=lease_s), started_at=now
        )
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)


class Heartbeat:
    """Extends a run's lease every lease_s / 4 until stopped (a thread of its own: a training step
    may hold the GIL-free C code for minutes without reporting progress)."""

    def __init__(self, sessions: Callable[[], Any], run_id: str, *, lease_s: float = LEASE_S) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.lease_s = lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"sift-lease-{run_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                with self.sessions() as session:
                    session.execute(
                        update(TrainingRun)
                        .where(TrainingRun.id == self.run_id, TrainingRun.status == "running")
                        .values(lease_expires_at=datetime.now(UTC) + timedelta(seconds=self.lease_s))
                    )
            except Exception as exc:  # a database blip: the next beat tries again, well within the lease
                log.warning("cannot extend the lease of training run %s: %s", self.run_id, exc)


class _Made(Protocol):
    version: str
    promoted: bool
    metrics: dict[str, Any]


M = TypeVar("M", bound=_Made)


def run_to_end(sessions: Callable[[], Any], *, run_id: str, task: str, train: Callable[[], M]) -> M:
    """train() under the run's heartbeat; then the run row says succeeded, with the version it made
    and its metrics, or failed, with the error (raised again)."""
    try:
        with Heartbeat(sessions, run_id):
            made = train()
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        with sessions() as session:
            fail_run(session, run_id=run_id, task=task, error=exc)
        raise
    with sessions() as session:
        finish_run(session, run_id=run_id, task=task, version=made.version, promoted=made.promoted, scores=made.metrics)
    return made


def time_limit_problems(*, budget_s: float, task_limit_s: float, visibility_timeout_s: float | None) -> list[str]:
    """What is wrong between the training budget, the task's time limit and the broker's visibility
    timeout, each with its fix; [] when they fit."""
    problems = []
    if task_limit_s <= budget_s:
        problems.append(
            f"the train task's time limit ({task_limit_s:.0f} s) is not above SIFT_TRAIN_BUDGET_S ({budget_s:.0f} s)"
        )
    if visibility_timeout_s is not None and visibility_timeout_s <= task_limit_s:
        problems.append(
            f"SIFT_VISIBILITY_TIMEOUT_S ({visibility_timeout_s:.0f} s) is not above the train task's time limit "
            f"({task_limit_s:.0f} s): the broker re-delivers a run's message while it still trains (the run's "
            f"lease keeps the copy from training it twice); raise SIFT_VISIBILITY_TIMEOUT_S above "
            f"{task_limit_s + 60:.0f} or lower SIFT_TRAIN_BUDGET_S"
        )
    return problems
