"""The model registry and the run rows: queue runs, find versions, switch the active one, and say
which tasks are due for training.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services import metrics
from services.classify.tasks import get_task
from services.db.models import ClassTask, KindEncoder, ModelVersion, TrainingRun
from services.errors import Conflict, NotFound
from services.training import labels as label_repo


def new_run(
    session: Session, *, task: str, trigger: str = "api", now: datetime | None = None, others: Collection[str] = ()
) -> TrainingRun:
    """Queue a run for a task, a classifier's or one of `others` (the caller sends it to a worker,
    or runs it in place)."""
    if task not in others:
        get_task(session, task)
    if task_has_open_run(session, task=task):
        raise Conflict(f"task {task!r} already has a run queued or running; wait for it (GET /v1/training/runs)")
    run = TrainingRun(
        id=str(uuid.uuid4()),
        task=task,
        status="queued",
        stage="queued",
        progress=0.0,
        trigger=trigger,
        label_count=0,
        max_label_id=0,
        promoted=False,
        metrics={},
        created_at=now or datetime.now(UTC),
    )
    session.add(run)
    session.flush()
    return run


def task_has_open_run(session: Session, *, task: str, stale_after_s: float = 3 * 3600) -> bool:
    """A run queued or running, started recently enough to be alive."""
    rows = session.scalars(
        select(TrainingRun).where(TrainingRun.task == task, TrainingRun.status.in_(("queued", "running")))
    )
    now = datetime.now(UTC)
    for run in rows:
        since = run.started_at or run.created_at
        if (now - (since if since.tzinfo else since.replace(tzinfo=UTC))).total_seconds() < stale_after_s:
            return True
    return False


def get_run(session: Session, *, run_id: str) -> TrainingRun:
    """A run by id, or NotFound."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"no training run with id {run_id!r}")
    return run


def encoder_path(artifact_path: str) -> str | None:
    """The fine-tuned encoder of a version, if it has one."""
    path = Path(artifact_path) / "encoder"
    return str(path) if path.is_dir() else None


def get_version(session: Session, *, version: str) -> ModelVersion:
    """A model version, or NotFound."""
    row = session.get(ModelVersion, version)
    if row is None:
        raise NotFound(f"no model version {version!r}; see GET /v1/models")
    return row


def list_versions(session: Session, *, task: str | None = None) -> list[ModelVersion]:
    """Model versions, newest first."""
    stmt = select(ModelVersion).order_by(ModelVersion.created_at.desc())
    if task:
        stmt = stmt.where(ModelVersion.task == task)
    return list(session.scalars(stmt))


def switch_active(session: Session, *, version: ModelVersion) -> None:
    """Retire the task's active version and activate this one (one transaction)."""
    now = datetime.now(UTC)
    session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.task == version.task, ModelVersion.status == "active", ModelVersion.version != version.version
        )
        .values(status="retired")
    )
    version.status, version.activated_at = "active", now
    session.flush()


def due_tasks(session: Session, *, min_new_labels: int) -> list[str]:
    """Tasks with at least min_new_labels labels since their last run's snapshot, and tasks whose
    active head was trained on another encoder than the kind's current one."""
    due = []
    encoders = {row.kind: row.encoder_version for row in session.scalars(select(KindEncoder))}
    for task in session.scalars(select(ClassTask).order_by(ClassTask.name)):
        last = session.scalar(
            select(TrainingRun)
            .where(TrainingRun.task == task.name, TrainingRun.status == "succeeded")
            .order_by(TrainingRun.created_at.desc())
            .limit(1)
        )
        after = last.max_label_id if last else 0
        stale = False
        active = session.scalar(
            select(ModelVersion).where(ModelVersion.task == task.name, ModelVersion.status == "active")
        )
        if active is not None and task.kind in encoders and active.encoder_version != encoders[task.kind]:
            stale = label_repo.new_since(session, task=task.name, after_id=0) > 0
        if (
            stale or label_repo.new_since(session, task=task.name, after_id=after) >= min_new_labels
        ) and not task_has_open_run(session, task=task.name):
            due.append(task.name)
    return due


def fail_run(session: Session, *, run_id: str, task: str, error: BaseException) -> None:
    """Mark a run failed with its error, and count it."""
    run = get_run(session, run_id=run_id)
    run.status, run.error, run.finished_at = "failed", f"{type(error).__name__}: {error}"[:2000], datetime.now(UTC)
    metrics.TRAINING_RUNS.labels(task=task, outcome="failed").inc()


def finish_run(
    session: Session, *, run_id: str, task: str, version: str, promoted: bool, scores: dict[str, Any]
) -> None:
    """Mark a run succeeded with the version it made and its metrics, and count it."""
    run = get_run(session, run_id=run_id)
    run.status, run.stage, run.progress = "succeeded", "done", 1.0
    run.model_version, run.promoted, run.metrics = version, promoted, scores
    run.finished_at = datetime.now(UTC)
    metrics.TRAINING_RUNS.labels(task=task, outcome="promoted" if promoted else "rejected").inc()
