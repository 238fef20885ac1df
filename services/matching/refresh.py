"""Stored suggestions kept in step with the FAQ base: when entries are written or deleted, or the
ticket kind switches to a new encoder or intent head, the tickets processed within
SIFT_SUGGESTION_REFRESH_S (newest first, at most SIFT_SUGGESTION_REFRESH_MAX) are matched again
and their stored suggestions replaced where they changed, so `GET /v1/events/{id}` agrees with
`POST /v1/match` for the same text without anyone re-sending a ticket."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.db.models import Event
from services.events.pipeline import text_to_embed
from services.matching import faq as faq_repo
from services.matching.matcher import Matcher

PAGE = 256


def refresh_suggestions(
    *, matcher: Matcher, sessions: Callable[[], Any], window_s: float, limit: int, now: datetime
) -> dict[str, int]:
    """Match the recent done tickets again; returns how many were read and how many changed."""
    since = now - timedelta(seconds=window_s)
    with sessions() as session:
        ids = list(
            session.scalars(
                select(Event.id)
                .where(Event.kind == faq_repo.KIND, Event.status == "done", Event.processed_at >= since)
                .order_by(Event.processed_at.desc())
                .limit(limit)
            )
        )
    changed = 0
    for start in range(0, len(ids), PAGE):
        changed += _refresh_page(matcher, sessions, ids[start : start + PAGE])
    return {"tickets": len(ids), "changed": changed}


def _refresh_page(matcher: Matcher, sessions: Callable[[], Any], ids: list[str]) -> int:
    with sessions() as session:  # read, then match outside it: on SQLite a process holds one session at a time
        events = list(session.scalars(select(Event).where(Event.id.in_(ids))))
        for event in events:
            session.expunge(event)
    if not events:
        return 0
    model = matcher.models.for_kind(faq_repo.KIND)
    vectors = model.encoder.encode([text_to_embed(e) for e in events])
    results = matcher.step(model, events, vectors, model.predict(vectors))
    changed = 0
    with sessions() as session:
        for event, result in zip(events, results, strict=True):
            row = session.get(Event, event.id)
            # A text changed since it was read is being processed again, with the base as it is now.
            if row is None or row.status != "done" or row.content_hash != event.content_hash:
                continue
            merged = {**(row.predictions or {}), **result}
            if merged != row.predictions:
                row.predictions = merged
                changed += 1
    return changed
