"""Re-running processing for chosen events (POST /v1/events:reprocess, `sift reprocess`): by ids,
kind and a range of received times. Done and failed events go back to `queued` and are sent
again; queued or processing ones are already on their way and are left alone, so calling it twice
queues nothing twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.config import EVENT_KINDS
from services.db.models import Event
from services.timestamps import Timestamp

MAX_EVENTS = 100_000


class Selection(BaseModel):
    """Which events to process again: any of ids, kind, received since / until (all must hold)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, max_length=MAX_EVENTS)
    kind: str | None = Field(None, description="ticket, news or product")
    since: Timestamp | None = Field(None, description="received at or after")
    until: Timestamp | None = Field(None, description="received before")
    limit: int = Field(10_000, ge=1, le=MAX_EVENTS, description="most events one call re-queues (oldest first)")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _names_some(self) -> Selection:
        if not (self.ids or self.kind or self.since or self.until):
            raise ValueError("name the events: ids, kind, since and/or until")
        if self.kind is not None and self.kind not in EVENT_KINDS:
            raise ValueError(f"kind is one of {', '.join(EVENT_KINDS)}, not {self.kind!r}")
        return self


@dataclass
class Requeued:
    """What a call found and did."""

    matched: int = 0
    queued: list[str] = field(default_factory=list)
    in_flight: int = 0  # already queued or processing


def requeue(session: Session, *, selection: Selection, now: datetime) -> Requeued:
    """Put the selected done or failed events back to queued (their ids, to send); idempotent."""
    query = select(Event.id, Event.status).order_by(Event.received_at, Event.id).limit(selection.limit)
    if selection.ids:
        query = query.where(Event.id.in_(selection.ids))
    if selection.kind:
        query = query.where(Event.kind == selection.kind)
    if selection.since:
        query = query.where(Event.received_at >= selection.since)
    if selection.until:
        query = query.where(Event.received_at < selection.until)
    rows = session.execute(query).all()
    out = Requeued(matched=len(rows))
    again = [event_id for event_id, status in rows if status in ("done", "failed")]
    out.in_flight = len(rows) - len(again)
    for start in range(0, len(again), 1000):
        out.queued += _mark(session, again[start : start + 1000], now)
    return out


def _mark(session: Session, ids: Sequence[str], now: datetime) -> list[str]:
    session.execute(
        update(Event)
        .where(Event.id.in_(ids), Event.status.in_(("done", "failed")))
        .values(status="queued", enqueued_at=now, attempts=0, error=None)
        .execution_options(synchronize_session=False)
    )
    return list(ids)
