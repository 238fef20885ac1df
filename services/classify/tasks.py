"""Classification tasks and their labels: names, descriptions, the zero-shot label texts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import EVENT_KINDS
from services.db.models import ClassTask
from services.errors import Conflict, InvalidInput, NotFound

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
LABEL_NAME = re.compile(r"^[^\s\x00-\x1f][^\x00-\x1f]{0,127}$")


@dataclass(frozen=True)
class LabelDef:
    """A label of a task and the description its zero-shot head embeds."""

    name: str
    description: str


def describe(name: str) -> str:
    """The default description of a label: its name in words ("card_arrival" -> "card arrival")."""
    return re.sub(r"[_\-]+", " ", name).strip()


def label_defs(task: ClassTask) -> list[LabelDef]:
    """A task's labels, in their stored order."""
    return [LabelDef(item["name"], item.get("description") or describe(item["name"])) for item in task.labels]


def list_tasks(session: Session) -> list[ClassTask]:
    """Every task, by name."""
    return list(session.scalars(select(ClassTask).order_by(ClassTask.name)))


def get_task(session: Session, name: str) -> ClassTask:
    """A task by name, or NotFound."""
    task = session.get(ClassTask, name)
    if task is None:
        known = ", ".join(t.name for t in list_tasks(session)) or "none"
        raise NotFound(f"unknown task {name!r} (known tasks: {known})")
    return task


def add_task(
    session: Session,
    *,
    name: str,
    kind: str,
    labels: Sequence[LabelDef],
    open_labels: bool,
    fine_tune: bool = False,
    now: datetime | None = None,
) -> ClassTask:
    """Create a task; the same definition again is a no-op, a different one a Conflict."""
    if not TASK_NAME.match(name):
        raise InvalidInput(f"task name {name!r}: use 1-64 lowercase letters, digits or _, starting with a letter")
    if kind not in EVENT_KINDS:
        raise InvalidInput(f"kind {kind!r}: must be one of {', '.join(EVENT_KINDS)}")
    names = [label.name for label in labels]
    if len(set(names)) != len(names):
        raise InvalidInput(f"task {name!r}: label names must be unique")
    for label in names:
        _check_label_name(label)
    if not labels and not open_labels:
        raise InvalidInput(f"task {name!r}: give its labels, or set open_labels to take them from the data")
    stored = [{"name": label.name, "description": label.description} for label in labels]
    existing = session.get(ClassTask, name)
    if existing is not None:
        same = existing.kind == kind and existing.open_labels == open_labels and existing.labels == stored
        if same:
            return existing
        raise Conflict(f"task {name!r} exists with another definition; choose another name")
    if fine_tune and session.scalar(select(ClassTask).where(ClassTask.kind == kind, ClassTask.fine_tune)) is not None:
        raise Conflict(
            f"kind {kind!r} already has a task that fine-tunes its encoder; add this one with fine_tune false"
        )
    task = ClassTask(
        name=name,
        kind=kind,
        labels=stored,
        open_labels=open_labels,
        fine_tune=fine_tune,
        created_at=now or datetime.now(UTC),
    )
    session.add(task)
    session.flush()
    return task


def admit_labels(task: ClassTask, names: Iterable[str]) -> None:
    """Check label names against a task; an open task learns new names, a closed one refuses them."""
    known = {item["name"] for item in task.labels}
    new = []
    for name in names:
        _check_label_name(name)
        if name not in known:
            if not task.open_labels:
                raise InvalidInput(
                    f"label {name!r} is not one of task {task.name!r}'s labels: {', '.join(sorted(known))}"
                )
            known.add(name)
            new.append({"name": name, "description": describe(name)})
    if new:
        task.labels = [*task.labels, *new]  # a new list, so the JSON column is written


def _check_label_name(name: str) -> None:
    if not isinstance(name, str) or not LABEL_NAME.match(name) or name != name.strip():
        raise InvalidInput(f"label {name!r}: 1-128 printable characters, no leading or trailing space")
