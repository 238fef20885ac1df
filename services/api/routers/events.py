"""POST /v1/events, GET /v1/events (the latest) and GET /v1/events/{id}."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services import metrics
from services.api import errors
from services.api.deps import RuntimeDep, SessionDep, WriterDep
from services.db import browse
from services.db import events as repo
from services.db.models import Event, as_utc
from services.enqueue import Enqueuer
from services.errors import BrokerUnavailable, NotFound
from services.events import accept as ingest
from services.events import reprocess

router = APIRouter(prefix="/v1/events", tags=["events"])
log = logging.getLogger(__name__)


class EventsIn(BaseModel):
    """A batch of events (1 to SIFT_MAX_EVENTS_PER_REQUEST)."""

    events: list[ingest.EventIn]


class EventsAccepted(BaseModel):
    """The ids of the accepted events, in request order."""

    ids: list[str]
    queued: int = Field(description="how many of them now wait for processing (the rest were unchanged)")


class EventOut(BaseModel):
    """An event's status and what the pipeline made of it."""

    id: str
    kind: str
    title: str | None
    text: str
    status: str
    error: str | None
    predictions: dict[str, Any]
    suggestions: list[dict[str, Any]]
    abstain: bool | None
    model_version: str | None
    attempts: int
    received_at: datetime
    processed_at: datetime | None


class EventList(BaseModel):
    """The latest events, unfinished ones first, then finished ones newest first; texts cut to SNIPPET_CHARS."""

    events: list[EventOut]


SNIPPET_CHARS = 300


@router.post("", status_code=202, response_model=EventsAccepted, responses=errors.responses(409))
async def post_events(body: EventsIn, runtime: RuntimeDep, writer: WriterDep) -> EventsAccepted:
    """Accept events: rows are committed (with other requests' in one transaction), then their
    ids are enqueued, then the answer goes out."""
    s = runtime.settings
    limits = ingest.Limits(max_events=s.max_events_per_request, max_text_chars=s.max_text_chars)
    prepared = ingest.prepare(events=body.events, limits=limits)
    accepted = await asyncio.wrap_future(writer.submit(runtime.db, prepared))
    metrics.count_received(event.kind for event in prepared)
    queued = len(accepted.queued)
    log.info("accepted %d events, %d queued", len(accepted.ids), queued, extra={"event_ids": accepted.ids})
    return EventsAccepted(ids=accepted.ids, queued=queued)


@router.get("/{event_id}", response_model=EventOut)
def get_event(event_id: str, session: SessionDep) -> EventOut:
    """One event's status, predictions and model version."""
    event = repo.get(session, event_id=event_id)
    if event is None:
        raise NotFound(f"no event with id {event_id!r}")
    return event_out(event)


@router.get("", response_model=EventList)
def list_events(
    session: SessionDep,
    kind: Literal["ticket", "news", "product"] | None = None,
    status: Literal["queued", "processing", "done", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> EventList:
    """The latest events, optionally of one kind or status."""
    rows = browse.latest_events(session, kind=kind, status=status, limit=limit)
    return EventList(events=[event_out(e, max_text_chars=SNIPPET_CHARS) for e in rows])


def event_out(event: Event, *, max_text_chars: int | None = None) -> EventOut:
    """The API form of an event (its text cut to max_text_chars when given)."""
    predictions = dict(event.predictions or {})
    return EventOut(
        id=event.id,
        kind=event.kind,
        title=event.title,
        text=event.text[:max_text_chars] if max_text_chars else event.text,
        status=event.status,
        error=event.error,
        predictions={k: v for k, v in predictions.items() if k not in ("suggestions", "abstain")},
        suggestions=list(predictions.get("suggestions", [])),
        abstain=predictions.get("abstain"),
        model_version=event.model_version,
        attempts=event.attempts,
        received_at=as_utc(event.received_at),
        processed_at=as_utc(event.processed_at) if event.processed_at else None,
    )


class Reprocessed(BaseModel):
    """What a reprocess call found and queued."""

    matched: int = Field(description="events the selection found (at most its limit)")
    queued: int = Field(description="done or failed events put back in the queue")
    in_flight: int = Field(description="events already queued or processing (left alone)")
    not_enqueued: int = Field(0, description="queued but not sent (broker down): the sweep sends them")


@router.post(":reprocess", response_model=Reprocessed)
def post_reprocess(body: reprocess.Selection, runtime: RuntimeDep, request: Request) -> Reprocessed:
    """Run processing again for chosen events (ids, kind, received since/until); idempotent."""
    with runtime.db.session_scope() as session:
        done = reprocess.requeue(session, selection=body, now=datetime.now(UTC))
    not_enqueued = 0
    try:
        Enqueuer(request.app.state.enqueuer_app, batch_size=runtime.settings.batch_size).send(
            done.queued, tenant=runtime.tenant
        )
    except BrokerUnavailable:  # committed as queued: the beat sweep sends them once the broker is back
        not_enqueued = len(done.queued)
    log.info("reprocess: %d matched, %d queued", done.matched, len(done.queued), extra={"event_ids": done.queued})
    return Reprocessed(
        matched=done.matched, queued=len(done.queued), in_flight=done.in_flight, not_enqueued=not_enqueued
    )
