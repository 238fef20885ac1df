"""The events repository: bulk, idempotent reads and writes of the events table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.config import DEFAULT_TENANT
from services.db.models import Event, as_utc

EVENTS = cast(Table, Event.__table__)
# Point ids: uuid5 of the tenant and the exact id string, never a parse of the id, so a re-send maps
# to the same point and ids that differ in any character (even two spellings of one UUID) never share one.
POINT_NAMESPACE = uuid.UUID("0d4c7f38-2a5e-5b7a-9e11-3c8b1f6a4d20")
_CONTENT_COLUMNS = ("kind", "text", "title", "metadata", "entities", "content_hash", "occurred_at")


@dataclass(frozen=True)
class NewEvent:
    """A validated event, ready to be written."""

    id: str
    kind: str
    text: str
    title: str | None
    metadata: dict[str, Any]
    entities: list[Any]
    content_hash: str
    occurred_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    """What processing made of one event: done with predictions, or failed with an error."""

    event_id: str
    ok: bool
    predictions: dict[str, Any]
    model_version: str | None
    content_hash: str  # of the content that was processed
    error: str | None = None


def point_id_for(event_id: str, *, tenant: str) -> str:
    """The vector point id of a tenant's event."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x00{event_id}"))


def session_tenant(session: Session) -> str:
    """The tenant whose tables a session sees (services.db.session records it)."""
    return str(session.info.get("tenant", DEFAULT_TENANT))


def oldest_unfinished(session: Session) -> datetime | None:
    """When the oldest event still queued or processing was received (the sweep re-sends stuck
    events and moves their enqueued_at, so received_at is what shows work that does not finish)."""
    oldest = session.scalar(select(func.min(Event.received_at)).where(Event.status.in_(("queued", "processing"))))
    return as_utc(oldest) if oldest is not None else None


def kinds_of(session: Session, *, ids: Sequence[str]) -> dict[str, str]:
    """The kind of each id that already exists."""
    rows = session.execute(select(Event.id, Event.kind).where(Event.id.in_(ids)))
    return {row.id: row.kind for row in rows}


def upsert_new(session: Session, *, events: Sequence[NewEvent], now: datetime) -> list[str]:
    """Insert events; an existing id with the same content is left alone, one with new content
    is updated and queued again. Returns the ids that are (re)queued by this call."""
    if not events:
        return []
    tenant = session_tenant(session)
    rows = [_row(event, now, tenant) for event in events]
    # One statement shape whatever the row count, sent as executemany: SQLAlchemy batches it into
    # multi-row INSERTs ("insertmanyvalues") and compiles it once per process, not per request.
    result = session.execute(_upsert_statement(session.get_bind().dialect.name), rows)
    return [row[0] for row in result]


@lru_cache(maxsize=4)
def _upsert_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(EVENTS)
    excluded = stmt.excluded
    changed: dict[str, Any] = {name: excluded[name] for name in _CONTENT_COLUMNS}
    changed.update(status="queued", enqueued_at=excluded.enqueued_at, error=None, attempts=0)
    return stmt.on_conflict_do_update(
        index_elements=[EVENTS.c.id],
        set_=changed,
        where=and_(EVENTS.c.kind == excluded.kind, EVENTS.c.content_hash != excluded.content_hash),
    ).returning(EVENTS.c.id)


def _row(event: NewEvent, now: datetime, tenant: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "point_id": point_id_for(event.id, tenant=tenant),
        "kind": event.kind,
        "text": event.text,
        "title": event.title,
        "metadata": event.metadata,
        "entities": event.entities,
        "content_hash": event.content_hash,
        "occurred_at": event.occurred_at,
        "received_at": now,
        "enqueued_at": now,
        "status": "queued",
        "attempts": 0,
        "predictions": {},
    }


def claim(
    session: Session,
    *,
    ids: Sequence[str],
    now: datetime,
    stale_after_s: float,
    limit: int = 0,
    max_attempts: int | None = None,
    holding: Sequence[str] = (),
) -> list[Event]:
    """Mark events as processing and return them: those of ids that wait (queued, or processing
    but abandoned for stale_after_s); then, with a limit, claims abandoned by a dead worker (up to
    `limit` more, oldest first, however full the batch already is) and queued events, oldest
    first, until the batch holds `limit`. So a worker working through a backlog takes over a lost
    worker's events as soon as their claim is stale, instead of after the backlog (the beat's sweep
    cannot get through a busy queue), and batches grow by themselves when a backlog builds up.
    Done and failed events, events a live worker holds and, with max_attempts, abandoned claims
    that used up their attempts (the sweep fails them) are skipped: a duplicate message is a no-op.
    holding: claims the caller itself still works on (a batch being written), never abandoned."""
    abandoned = and_(Event.status == "processing", Event.claimed_at <= now - timedelta(seconds=stale_after_s))
    if holding:
        abandoned = and_(abandoned, Event.id.not_in(holding))
    if max_attempts is not None:
        abandoned = and_(abandoned, Event.attempts < max_attempts)
    waiting = or_(Event.status == "queued", abandoned)
    claimed = _mark_processing(session, Event.id.in_(ids), waiting, now=now)
    if limit > 0:
        claimed += _take_oldest(session, abandoned, Event.id.not_in(claimed), limit=limit, now=now)
    if len(claimed) < limit:
        claimed += _take_oldest(session, Event.status == "queued", limit=limit - len(claimed), now=now)
    return list(session.scalars(select(Event).where(Event.id.in_(claimed)))) if claimed else []


def _take_oldest(session: Session, *conditions: Any, limit: int, now: datetime) -> list[str]:
    """Claim up to limit events that meet the conditions, oldest enqueued first."""
    more = select(Event.id).where(*conditions).order_by(Event.enqueued_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        more = more.with_for_update(skip_locked=True)  # concurrent workers take different events
    extra = list(session.scalars(more))
    return _mark_processing(session, Event.id.in_(extra), *conditions, now=now) if extra else []


def _mark_processing(session: Session, *conditions: Any, now: datetime) -> list[str]:
    stmt = (
        update(Event)
        .where(*conditions)
        .values(status="processing", claimed_at=now, attempts=Event.attempts + 1)
        .returning(Event.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(stmt).all())


def release(session: Session, *, ids: Sequence[str]) -> None:
    """Put claimed events back to queued (their batch will be retried). The claim does not count
    as an attempt: a dependency was down, the events did nothing wrong, and an outage must not
    use up the attempts that `give_up` keeps for events that kill their worker."""
    session.execute(
        update(Event)
        .where(Event.id.in_(ids), Event.status == "processing")
        .values(status="queued", attempts=case((Event.attempts > 0, Event.attempts - 1), else_=0))
        .execution_options(synchronize_session=False)
    )


def record(session: Session, *, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Write a batch of outcomes with one executemany per status. An outcome is written only while
    the row still holds the content that was processed: a text re-sent meanwhile stays queued, and
    its own message has it processed, instead of being marked done with the old text's vector."""
    done = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    table = EVENTS
    same_content = (table.c.id == bindparam("b_id"), table.c.content_hash == bindparam("b_hash"))
    if done:
        session.execute(
            update(table)
            .where(*same_content)
            .values(
                status="done",
                error=None,
                processed_at=now,
                predictions=bindparam("b_predictions"),
                model_version=bindparam("b_model_version"),
            ),
            [
                {
                    "b_id": o.event_id,
                    "b_hash": o.content_hash,
                    "b_predictions": o.predictions,
                    "b_model_version": o.model_version,
                }
                for o in done
            ],
        )
    if failed:
        session.execute(
            update(table).where(*same_content).values(status="failed", processed_at=now, error=bindparam("b_error")),
            [{"b_id": o.event_id, "b_hash": o.content_hash, "b_error": o.error} for o in failed],
        )


def missing(session: Session, *, ids: Sequence[str]) -> list[str]:
    """Those of ids that have no row (deleted while they were being processed)."""
    found = set(session.scalars(select(Event.id).where(Event.id.in_(ids)))) if ids else set()
    return [i for i in ids if i not in found]


def get(session: Session, *, event_id: str) -> Event | None:
    """One event by id."""
    return session.get(Event, event_id)


def stuck(session: Session, *, older_than: datetime, limit: int) -> list[str]:
    """Ids left queued or processing since before older_than: their message was lost."""
    stmt = (
        select(Event.id)
        .where(
            or_(
                and_(Event.status == "queued", Event.enqueued_at < older_than),
                and_(Event.status == "processing", Event.claimed_at < older_than, Event.enqueued_at < older_than),
            )
        )
        .order_by(Event.enqueued_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def mark_enqueued(session: Session, *, ids: Sequence[str], now: datetime) -> None:
    """Record that ids were just (re)sent to the broker."""
    session.execute(
        update(Event).where(Event.id.in_(ids)).values(enqueued_at=now).execution_options(synchronize_session=False)
    )


def give_up(session: Session, *, max_attempts: int, now: datetime) -> int:
    """Fail events that were claimed max_attempts times without finishing (they kill their worker)."""
    result = session.execute(
        update(Event)
        .where(Event.status.in_(("queued", "processing")), Event.attempts >= max_attempts)
        .values(status="failed", processed_at=now, error=f"gave up after {max_attempts} attempts")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def counts(session: Session) -> dict[str, dict[str, int]]:
    """Number of events by kind and status."""
    out: dict[str, dict[str, int]] = {}
    rows = session.execute(select(Event.kind, Event.status, func.count()).group_by(Event.kind, Event.status))
    for kind, status, n in rows:
        out.setdefault(kind, {})[status] = int(n)
    return out


def processed_since(session: Session, *, since: datetime) -> int:
    """Events finished (done or failed) since a moment."""
    stmt = select(func.count()).select_from(Event).where(Event.processed_at >= since)
    return int(session.scalar(stmt) or 0)


def window(now: datetime, seconds: float) -> datetime:
    """now minus seconds."""
    return now - timedelta(seconds=seconds)
