"""Accepting events: validate, then write them idempotently. Used by the API and `sift ingest`."""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from services.db import events as repo
from services.db.events import point_id_for as point_id_for  # the events' point ids, for the layers above
from services.errors import Conflict, DomainError, InvalidInput, invalid_batch
from services.timestamps import Timestamp

log = logging.getLogger(__name__)

MAX_ID_CHARS = 128
# An id is a URL path segment (GET /v1/events/{id}); these cannot round-trip through one.
ID_FORBIDDEN = ("/", "\\")
ID_RULE = (
    "an id holds 1 to 128 printable characters without surrounding spaces, and no / or \\ "
    "(it must round-trip as a URL path segment); it may not be . or .."
)
MAX_METADATA_BYTES = 16_384
# Spaces and invisible format characters (zero-width, direction marks, BOM): a text of only these is blank.
_INVISIBLE = "".join(c for c in map(chr, range(0x10000)) if c.isspace() or unicodedata.category(c) == "Cf")


def is_blank(text: str) -> bool:
    """True for a text with nothing visible in it (empty, spaces, zero-width or direction marks only)."""
    return not text.strip(_INVISIBLE)


class EventIn(BaseModel):
    """One event as a producer sends it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="your id; re-sending it is safe. Printable, no surrounding spaces, no / or \\, not . or ..",
        # Documents the rule for clients and fuzzers; the validator below enforces it with a message.
        json_schema_extra={"pattern": r"^[^/\\\s\x00-\x1f\x7f](?:[^/\\\x00-\x1f\x7f]*[^/\\\s\x00-\x1f\x7f])?$"},
    )
    kind: Literal["ticket", "news", "product"]
    text: str = Field(description="the text to embed and classify; must not be blank")
    title: str | None = Field(None, max_length=1000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    entities: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    occurred_at: Timestamp | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError("text must not be empty or blank")
        return value

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if (
            not value.isprintable()
            or value != value.strip()
            or value in (".", "..")
            or any(c in value for c in ID_FORBIDDEN)
        ):
            raise ValueError(f"id {value!r} is not allowed: {ID_RULE}")
        return value


@dataclass(frozen=True)
class Limits:
    """Size limits for one request, from settings."""

    max_events: int
    max_text_chars: int


@dataclass(frozen=True)
class Accepted:
    """Ids of all events in the request (in order) and those that now wait for processing."""

    ids: list[str]
    queued: list[str]


def accept(session: Session, *, events: Sequence[EventIn], limits: Limits, now: datetime | None = None) -> Accepted:
    """Validate, then write every event in one statement; nothing is written on any error."""
    result = write_requests(session, requests=[prepare(events=events, limits=limits)], now=now)[0]
    if isinstance(result, DomainError):
        raise result
    return result


def prepare(*, events: Sequence[EventIn], limits: Limits) -> list[repo.NewEvent]:
    """Everything that needs no database: limits, ids, hashes, duplicates within the request."""
    check_limits(events=events, limits=limits)
    new = [to_new_event(event) for event in events]
    _refuse_duplicates(new)
    return new


def write_requests(
    session: Session, *, requests: Sequence[Sequence[repo.NewEvent]], now: datetime | None = None
) -> list[Accepted | DomainError]:
    """Write the events of several requests with one SELECT and one upsert (group commit).
    A request whose ids clash with stored events of another kind gets a Conflict and writes nothing;
    the others are unaffected. An id sent by two requests at once is written once, as the last sent it."""
    now = now or datetime.now(UTC)
    existing = repo.kinds_of(session, ids=[e.id for events in requests for e in events])
    results: list[Accepted | DomainError] = []
    latest: dict[str, repo.NewEvent] = {}
    for events in requests:
        clash = _kind_clash(events, existing)
        results.append(clash or Accepted(ids=[e.id for e in events], queued=[]))
        if clash is None:
            latest.update((e.id, e) for e in events)
    queued = set(repo.upsert_new(session, events=list(latest.values()), now=now))
    return [
        Accepted(ids=r.ids, queued=[i for i in r.ids if i in queued]) if isinstance(r, Accepted) else r for r in results
    ]


def check_limits(*, events: Sequence[EventIn], limits: Limits) -> None:
    """Raise InvalidInput naming each event that is over a limit."""
    if not events:
        raise InvalidInput("send at least one event in 'events'")
    if len(events) > limits.max_events:
        raise InvalidInput(
            f"too many events: {len(events)} in one request, at most {limits.max_events}; split the request",
            details={"max_events": limits.max_events, "received": len(events)},
        )
    problems = []
    for index, event in enumerate(events):
        if len(event.text) > limits.max_text_chars:
            problems.append(
                {"index": index, "field": "text", "problem": f"longer than {limits.max_text_chars} characters"}
            )
        if "\x00" in event.text or (event.title and "\x00" in event.title):
            problems.append({"index": index, "field": "text", "problem": "contains a NUL character"})
        if len(json.dumps(event.metadata, default=str)) > MAX_METADATA_BYTES:
            problems.append({"index": index, "field": "metadata", "problem": f"larger than {MAX_METADATA_BYTES} bytes"})
    if problems:
        raise invalid_batch("event", problems, field="events")


def to_new_event(event: EventIn) -> repo.NewEvent:
    """Give the event its ids, normalised timestamp and content hash."""
    event_id = event.id or str(uuid.uuid4())
    occurred = event.occurred_at
    if occurred is not None and occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    content = json.dumps(
        [
            event.kind,
            event.text,
            event.title,
            event.metadata,
            event.entities,
            occurred.isoformat() if occurred else None,
        ],
        sort_keys=True,
        default=str,
    )
    return repo.NewEvent(
        id=event_id,
        kind=event.kind,
        text=event.text,
        title=event.title,
        metadata=event.metadata,
        entities=list(event.entities),
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
        occurred_at=occurred,
    )


def _refuse_duplicates(events: Sequence[repo.NewEvent]) -> None:
    seen: set[str] = set()
    twice = sorted({e.id for e in events if e.id in seen or seen.add(e.id)})  # type: ignore[func-returns-value]
    if twice:
        raise InvalidInput("an id appears more than once in this request; send each event once", details=twice)


def _kind_clash(events: Sequence[repo.NewEvent], existing: dict[str, str]) -> Conflict | None:
    clashes = [
        {"id": e.id, "stored_kind": existing[e.id], "sent_kind": e.kind}
        for e in events
        if e.id in existing and existing[e.id] != e.kind
    ]
    if not clashes:
        return None
    return Conflict(
        "an event id is already used by an event of another kind; ids are unique across kinds", details=clashes
    )


def due_for_resend(session: Session, *, now: datetime, after_s: float, max_attempts: int, limit: int) -> list[str]:
    """The sweep: fail events that keep killing their worker, then return (and stamp) the ids
    left queued or processing for longer than after_s, whose message was lost."""
    given_up = repo.give_up(session, max_attempts=max_attempts, now=now)
    if given_up:
        log.warning("gave up on %d events after %d attempts", given_up, max_attempts)
    ids = repo.stuck(session, older_than=repo.window(now, after_s), limit=limit)
    if ids:
        repo.mark_enqueued(session, ids=ids, now=now)
    return ids
