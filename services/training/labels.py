"""Labels: what people say an event is, for a task. Versioned rows, validated as a whole.

A label names its event by id, or gives only a text: then an event of the task's kind is made
for that text (its id derived from the text, so the same text labeled twice is one event).
A correction adds a row and marks the previous one superseded_by it; re-sending the label an
event already has is a no-op, so a retried request writes nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from services.classify.tasks import admit_labels
from services.db.models import ClassTask, Event, Faq, Label
from services.errors import InvalidInput, invalid_batch
from services.events import accept as ingest


class LabelIn(BaseModel):
    """One label: an event id or a text, the task, the label."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, min_length=1, max_length=ingest.MAX_ID_CHARS)
    text: str | None = Field(None, min_length=1)
    task: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "rejected", "manual"] | None = Field(
        None,
        description="an agent's outcome for an FAQ suggestion (task 'intent', label an FAQ id): accepted, "
        "manual (answered by hand; the label is the FAQ that should have matched), or rejected (the label is "
        "the FAQ that was wrong: kept for calibration, never trained on)",
    )

    @model_validator(mode="after")
    def _one_subject(self) -> LabelIn:
        if self.event_id is None and (self.text is None or ingest.is_blank(self.text)):
            raise ValueError("give event_id (a stored event) or text (a new one)")
        return self


@dataclass(frozen=True)
class Recorded:
    """What a batch of labels did: rows written, unchanged repeats, events created for texts."""

    written: int
    unchanged: int
    new_event_ids: list[str]


def text_event_id(kind: str, text: str) -> str:
    """The id of the event made for a labeled text."""
    return "text-" + hashlib.sha256(f"{kind}\x00{text}".encode()).hexdigest()[:40]


def record(
    session: Session,
    *,
    labels: Sequence[LabelIn],
    source: str = "api",
    max_labels: int,
    max_text_chars: int,
    now: datetime | None = None,
) -> Recorded:
    """Validate every label, then write them all (or nothing, raising InvalidInput)."""
    now = now or datetime.now(UTC)
    if not labels:
        raise InvalidInput("send at least one label in 'labels'")
    if len(labels) > max_labels:
        raise InvalidInput(f"too many labels: {len(labels)} in one request, at most {max_labels}; split the request")
    tasks, events = check(session, labels=labels, max_text_chars=max_text_chars)
    for name, task in tasks.items():
        admit_labels(task, [x.label for x in labels if x.task == name])

    subjects, new_event_ids = _subjects(
        session, labels, tasks=tasks, events=events, max_text_chars=max_text_chars, now=now
    )
    written, unchanged = _write(session, subjects, source=source, now=now)
    return Recorded(written=written, unchanged=unchanged, new_event_ids=new_event_ids)


def _subjects(
    session: Session,
    labels: Sequence[LabelIn],
    *,
    tasks: dict[str, ClassTask],
    events: dict[str, Event],
    max_text_chars: int,
    now: datetime,
) -> tuple[list[tuple[str, str, LabelIn]], list[str]]:
    """(event id, text, label) for every label; a label given with its text creates the event
    (queued for processing) and returns its id among the new ones."""
    texts: list[ingest.EventIn] = []
    subjects: list[tuple[str, str, LabelIn]] = []
    for item in labels:
        kind = tasks[item.task].kind
        if item.event_id is not None:
            subjects.append((item.event_id, text_of(events[item.event_id]), item))
        else:
            assert item.text is not None
            event_id = text_event_id(kind, item.text)
            texts.append(ingest.EventIn(id=event_id, kind=kind, text=item.text))  # type: ignore[arg-type]
            subjects.append((event_id, item.text, item))
    new_event_ids: list[str] = []
    if texts:
        unique = list({e.id: e for e in texts}.values())
        limits = ingest.Limits(max_events=len(unique), max_text_chars=max_text_chars)
        new_event_ids = ingest.accept(session, events=unique, limits=limits, now=now).queued
    return subjects, new_event_ids


def _write(
    session: Session, subjects: list[tuple[str, str, LabelIn]], *, source: str, now: datetime
) -> tuple[int, int]:
    """Write each label that changes what is in force (superseding the old one); (written, unchanged)."""
    written = unchanged = 0
    in_force = {
        (row.event_id, row.task): row
        for row in session.scalars(
            select(Label).where(Label.event_id.in_({s[0] for s in subjects}), Label.superseded_by.is_(None))
        )
    }
    for event_id, text, item in subjects:
        current = in_force.get((event_id, item.task))
        if current is not None and current.label == item.label and current.outcome == item.outcome:
            unchanged += 1
            continue
        row = Label(
            task=item.task,
            event_id=event_id,
            text=text,
            label=item.label,
            outcome=item.outcome,
            source=source,
            created_at=now,
        )
        session.add(row)
        session.flush()
        if current is not None:
            current.superseded_by = row.id
        in_force[(event_id, item.task)] = row
        written += 1
    session.flush()
    return written, unchanged


def check(
    session: Session, *, labels: Sequence[LabelIn], max_text_chars: int
) -> tuple[dict[str, ClassTask], dict[str, Event]]:
    """Raise InvalidInput listing every bad label (by index); else the tasks and events they name."""
    tasks = {t.name: t for t in session.scalars(select(ClassTask).where(ClassTask.name.in_({x.task for x in labels})))}
    event_ids = [x.event_id for x in labels if x.event_id is not None]
    events: dict[str, Event] = {}
    for start in range(0, len(event_ids), 1000):
        chunk = event_ids[start : start + 1000]
        events.update((e.id, e) for e in session.scalars(select(Event).where(Event.id.in_(chunk))))
    known = ", ".join(sorted(session.scalars(select(ClassTask.name))))
    problems = _problems(labels, tasks, events, max_text_chars, known)
    problems += _outcome_problems(session, labels)
    if problems:
        raise invalid_batch("label", problems, field="labels")
    return tasks, events


def text_of(event: Event) -> str:
    """The text a label of this event trains on (what the pipeline embeds)."""
    return f"{event.title}. {event.text}" if event.title else event.text


def _unknown_task(name: str, known: str) -> str:
    if known:
        return f"unknown task {name!r} (the tasks: {known}; `sift tasks add` makes one)"
    return f"unknown task {name!r} (no task exists yet; `sift tasks add` makes one)"


def _problems(
    labels: Sequence[LabelIn], tasks: dict[str, ClassTask], events: dict[str, Event], max_text_chars: int, known: str
) -> list[dict[str, object]]:
    problems: list[dict[str, object]] = []
    for index, item in enumerate(labels):
        task = tasks.get(item.task)
        if task is None:
            problems.append({"index": index, "field": "task", "problem": _unknown_task(item.task, known)})
            continue
        if item.event_id is not None:
            event = events.get(item.event_id)
            if event is None:
                problems.append({"index": index, "field": "event_id", "problem": f"no event with id {item.event_id!r}"})
            elif event.kind != task.kind:
                problems.append(
                    {
                        "index": index,
                        "field": "event_id",
                        "problem": f"event is a {event.kind}, task {task.name!r} labels {task.kind} events",
                    }
                )
        elif item.text is not None and (len(item.text) > max_text_chars or "\x00" in item.text):
            problems.append(
                {"index": index, "field": "text", "problem": f"longer than {max_text_chars} characters or has a NUL"}
            )
        try:
            admit_labels(_copy(task), [item.label])
        except InvalidInput as exc:
            problems.append({"index": index, "field": "label", "problem": exc.message})
    return problems


def _outcome_problems(session: Session, labels: Sequence[LabelIn]) -> list[dict[str, object]]:
    """An outcome is about an FAQ suggestion: task 'intent', and the label must be a stored FAQ id."""
    with_outcome = [(i, x) for i, x in enumerate(labels) if x.outcome is not None]
    if not with_outcome:
        return []
    known = set(session.scalars(select(Faq.id).where(Faq.id.in_({x.label for _, x in with_outcome}))))
    problems: list[dict[str, object]] = []
    for index, item in with_outcome:
        if item.task != "intent":
            problems.append({"index": index, "field": "outcome", "problem": "an outcome goes with task 'intent'"})
        elif item.label not in known:
            problems.append({"index": index, "field": "label", "problem": f"no FAQ with id {item.label!r}"})
    return problems


def _copy(task: ClassTask) -> ClassTask:
    return ClassTask(name=task.name, kind=task.kind, labels=list(task.labels), open_labels=task.open_labels)


def current(session: Session, *, task: str, with_rejected: bool = False) -> list[Label]:
    """The labels in force for a task (not superseded), oldest first; `rejected` outcomes (what a
    text is not) only when asked for."""
    stmt = select(Label).where(Label.task == task, Label.superseded_by.is_(None)).order_by(Label.id)
    if not with_rejected:
        stmt = stmt.where(or_(Label.outcome.is_(None), Label.outcome != "rejected"))
    return list(session.scalars(stmt))


def history(session: Session, *, event_id: str, task: str) -> list[Label]:
    """Every label an event was given for a task, oldest first (corrections included)."""
    stmt = select(Label).where(Label.event_id == event_id, Label.task == task).order_by(Label.id)
    return list(session.scalars(stmt))


def new_since(session: Session, *, task: str, after_id: int) -> int:
    """Labels in force for a task written after a label id (what the last run did not see)."""
    stmt = (
        select(func.count())
        .select_from(Label)
        .where(Label.task == task, Label.superseded_by.is_(None), Label.id > after_id)
    )
    return int(session.scalar(stmt) or 0)
