"""The FAQ knowledge base: PUT/GET/DELETE /v1/faqs/{id}, GET /v1/faqs, POST /v1/faqs:bulk,
POST /v1/faqs/{id}/paraphrases. Writes are in matching as soon as they return."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.api.deps import SQL_INT_MAX, RuntimeDep, SessionDep
from services.enqueue import send
from services.errors import BrokerUnavailable, InvalidInput
from services.matching import faq
from services.runtime import Runtime
from services.task_names import REFRESH_SUGGESTIONS

router = APIRouter(prefix="/v1", tags=["faq"])
log = logging.getLogger(__name__)


class FaqBody(BaseModel):
    """An entry without its id (the id is in the path)."""

    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str
    paraphrases: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    locale: str | None = None


class FaqsIn(BaseModel):
    """Entries to create or replace (1 to SIFT_MAX_FAQS_PER_REQUEST)."""

    faqs: list[faq.FaqIn]


class FaqOut(BaseModel):
    """An entry as stored."""

    id: str
    question: str
    answer: str
    paraphrases: list[str]
    tags: list[str]
    locale: str | None
    updated_at: str | None


class FaqList(BaseModel):
    """A page of entries and how many there are in all."""

    faqs: list[FaqOut]
    total: int


class BulkWritten(BaseModel):
    """Which entries a bulk write created, changed, or found unchanged."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]


class ParaphrasesIn(BaseModel):
    """New paraphrases: texts, or the ids of resolved ticket events whose text to add."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(default_factory=list, max_length=1000)
    event_ids: list[str] = Field(default_factory=list, max_length=1000)


class ParaphrasesAdded(BaseModel):
    """The entry after the call and how many paraphrases were new."""

    faq: FaqOut
    added: int


def _limits(runtime: Runtime) -> faq.FaqLimits:
    s = runtime.settings
    return faq.FaqLimits(s.max_faqs_per_request, s.max_paraphrases_per_faq, s.max_text_chars)


def _out(row: Any) -> FaqOut:
    return FaqOut(**faq.as_dict(row))


def _refresh(request: Request, runtime: Runtime) -> None:
    """The base changed: this process's matches see it at once, and recent tickets' stored
    suggestions are matched again in the background."""
    runtime.matcher.changed()
    try:
        send(request.app.state.enqueuer_app, REFRESH_SUGGESTIONS, runtime.tenant)
    except BrokerUnavailable as exc:  # the write stands; the next change or calibration refreshes them
        log.warning("FAQ base changed, suggestions not refreshed: %s", exc)


# Writes resolve the FAQ index (which may read the serving state) before opening their own
# transaction: on SQLite a process holds one session at a time.


@router.put("/faqs/{faq_id}", response_model=FaqOut)
def put_faq(faq_id: str, body: FaqBody, runtime: RuntimeDep, request: Request) -> FaqOut:
    """Create or replace one entry."""
    try:
        item = faq.FaqIn(id=faq_id, **body.model_dump())
    except ValueError as exc:  # the id in the path is checked like one in a body
        raise InvalidInput(f"bad FAQ: {exc}") from exc
    index = runtime.matcher.index()
    with runtime.db.session_scope() as session:
        written = faq.upsert(session, faqs=[item], index=index, limits=_limits(runtime))
        out = _out(faq.get(session, faq_id=faq_id))
    if not written.unchanged:
        _refresh(request, runtime)
    return out


@router.post("/faqs:bulk", response_model=BulkWritten)
def post_faqs_bulk(body: FaqsIn, runtime: RuntimeDep, request: Request) -> BulkWritten:
    """Create or replace many entries in one call; any bad entry writes nothing."""
    index = runtime.matcher.index()
    with runtime.db.session_scope() as session:
        written = faq.upsert(session, faqs=body.faqs, index=index, limits=_limits(runtime))
    if written.created or written.updated:
        _refresh(request, runtime)
    return BulkWritten(created=written.created, updated=written.updated, unchanged=written.unchanged)


@router.get("/faqs", response_model=FaqList)
def list_faqs(
    session: SessionDep,
    tag: str | None = None,
    locale: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=SQL_INT_MAX),
) -> FaqList:
    """Entries in id order, optionally with a tag or a locale."""
    rows, total = faq.list_faqs(session, tag=tag, locale=locale, limit=limit, offset=offset)
    return FaqList(faqs=[_out(r) for r in rows], total=total)


@router.get("/faqs/{faq_id}", response_model=FaqOut)
def get_faq(faq_id: str, session: SessionDep) -> FaqOut:
    """One entry."""
    return _out(faq.get(session, faq_id=faq_id))


@router.delete("/faqs/{faq_id}", status_code=204)
def delete_faq(faq_id: str, runtime: RuntimeDep, request: Request) -> None:
    """Remove an entry from the base and from matching."""
    index = runtime.matcher.index()
    with runtime.db.session_scope() as session:
        faq.delete(session, faq_id=faq_id, index=index)
    _refresh(request, runtime)


@router.post("/faqs/{faq_id}/paraphrases", response_model=ParaphrasesAdded)
def add_paraphrases(faq_id: str, body: ParaphrasesIn, runtime: RuntimeDep, request: Request) -> ParaphrasesAdded:
    """Add paraphrases to an entry, e.g. the texts of tickets it resolved."""
    index = runtime.matcher.index()
    with runtime.db.session_scope() as session:
        row, added = faq.add_paraphrases(
            session, faq_id=faq_id, texts=body.texts, event_ids=body.event_ids, index=index, limits=_limits(runtime)
        )
        out = ParaphrasesAdded(faq=_out(row), added=added)
    if added:
        _refresh(request, runtime)
    return out
