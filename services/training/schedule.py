"""The beat's training check for one tenant: start runs for tasks with enough new labels, resume
re-index jobs whose chain of steps stopped, and catch up switched ones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.config import Settings
from services.task_names import REINDEX, TRAIN_RUN, Sender
from services.training import registry, reindex
from services.training.runs import Trainer


def check(
    sessions: Callable[[], Any],
    *,
    reindexer: reindex.Reindexer,
    trainer: Trainer,
    settings: Settings,
    send: Sender,
) -> dict[str, object]:
    """Start due runs (a classifier's with enough new labels, another task's when its trainer says
    so) and resume re-index jobs (sent as tasks); returns what it started."""
    started: list[str] = []
    with sessions() as session:
        due = registry.due_tasks(session, min_new_labels=settings.train_min_new_labels)
        others = [other.task for other in trainer.others.values() if other.due(session)]
        for task in [*due, *others]:
            started.append(registry.new_run(session, task=task, trigger="schedule", others=others).id)
        running, recent = reindex.jobs_to_resume(session, now=datetime.now(UTC))
    for run_id in started:
        send(TRAIN_RUN, run_id, settings.tenant)
    for job_id in running:
        send(REINDEX, job_id, settings.tenant)
    caught_up = sum(reindexer.catch_up(job_id) for job_id in recent)
    return {"runs": started, "reindex_resumed": running, "caught_up": caught_up}
