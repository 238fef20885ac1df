"""Read-only listings for people looking at the system (the console, the CLI): the latest events,
the users who interacted, training runs. Each query is bounded by its limit and walks an index, so
a page polling it every few seconds costs the ingest path little."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from services.db.models import Event, Interaction, TrainingRun

UNFINISHED = ("queued", "processing")
FINISHED = ("done", "failed")


def latest_events(session: Session, *, kind: str | None, status: str | None, limit: int) -> list[Event]:
    """The latest events, unfinished ones first (by the time they were queued), then finished ones
    (by the time they finished). Each query reads an index in its order and stops after `limit`
    rows, so its cost does not grow with the table or the backlog."""
    statuses = (status,) if status else (*UNFINISHED, *FINISHED)
    found: list[Event] = []
    for waiting in (s for s in statuses if s in UNFINISHED):  # one per status: (status, enqueued_at) is ordered
        query = select(Event).where(Event.status == waiting).order_by(Event.enqueued_at.desc()).limit(limit)
        found += session.scalars(_of_kind(query, kind))
    finished = [s for s in statuses if s in FINISHED]
    if finished == ["failed"]:  # few: found by status, then sorted
        query = select(Event).where(Event.status == "failed").order_by(Event.processed_at.desc()).limit(limit)
        found += session.scalars(_of_kind(query, kind))
    elif finished:  # walk the processed_at index backwards (the status test must not pick another index)
        query = select(Event).where(Event.processed_at.is_not(None), Event.status.concat("").in_(finished))
        found += session.scalars(_of_kind(query.order_by(Event.processed_at.desc()).limit(limit), kind))
    return found[:limit]


def _of_kind(query: Select[Event], kind: str | None) -> Select[Event]:
    # `kind || ''`: a filter, never the index the plan starts from (that would sort every event of the kind)
    return query.where(Event.kind.concat("") == kind) if kind else query


@dataclass(frozen=True)
class UserActivity:
    """A user who interacted: how many interactions, and the latest one's time."""

    user_id: str
    interactions: int
    last_ts: datetime


def active_users(session: Session, *, limit: int, recent: int = 5000) -> list[UserActivity]:
    """Users of the latest `recent` interactions (read through the time index), most recent first."""
    latest = select(Interaction.user_id, Interaction.ts).order_by(Interaction.ts.desc()).limit(recent).subquery()
    query = (
        select(latest.c.user_id, func.count(), func.max(latest.c.ts))
        .group_by(latest.c.user_id)
        .order_by(func.max(latest.c.ts).desc(), latest.c.user_id)
        .limit(limit)
    )
    return [UserActivity(user_id=u, interactions=int(n), last_ts=ts) for u, n, ts in session.execute(query)]


def training_runs(session: Session, *, tasks: Sequence[str] = (), limit: int) -> list[TrainingRun]:
    """Training runs, newest first, of some tasks or all."""
    query = select(TrainingRun).order_by(TrainingRun.created_at.desc(), TrainingRun.id).limit(limit)
    return list(session.scalars(query.where(TrainingRun.task.in_(tasks)) if tasks else query))
