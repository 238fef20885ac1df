"""Moving the points of events whose point id changed (migration 0007) to their new ids.

Run by the process that opens a tenant's vector store, before it serves: a point is copied (vector
and payload) under its new id, the old id is deleted, then the row forgets where it came from. Each
step is idempotent, so a crash midway only repeats it. Where several ids shared one old point (two
spellings of one UUID), the point holds only the last-written event's vector: those events, and
done events whose old point is gone, are queued again and re-processed by the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update

from services.db.models import Event
from services.vectors.base import VectorPoint, VectorStore

log = logging.getLogger(__name__)


def move_points(
    *, sessions: Callable[[], Any], store: VectorStore, collection_for_kind: Callable[[str], str], page: int = 256
) -> int:
    """Move every marked event's point to its new id; returns how many events were handled."""
    with sessions() as session:
        if session.scalar(select(Event.id).where(Event.moved_from_point.is_not(None)).limit(1)) is None:
            return 0
        shared = set(
            session.scalars(
                select(Event.moved_from_point)
                .where(Event.moved_from_point.is_not(None))
                .group_by(Event.moved_from_point)
                .having(func.count() > 1)
            )
        )
    handled = requeued = 0
    while True:
        with sessions() as session:
            rows = session.execute(
                select(Event.id, Event.kind, Event.point_id, Event.moved_from_point, Event.status)
                .where(Event.moved_from_point.is_not(None))
                .order_by(Event.id)
                .limit(page)
            ).all()
        if not rows:
            break
        requeue: list[str] = []
        for kind in {row.kind for row in rows}:
            requeue += _move_kind(store, collection_for_kind(kind), [r for r in rows if r.kind == kind], shared)
        with sessions() as session:
            ids = [row.id for row in rows]
            session.execute(update(Event).where(Event.id.in_(ids)).values(moved_from_point=None))
            if requeue:
                session.execute(
                    update(Event).where(Event.id.in_(requeue)).values(status="queued", claimed_at=None, attempts=0)
                )
        handled += len(rows)
        requeued += len(requeue)
    log.info("moved the vector points of %d events to their new ids (%d queued again)", handled, requeued)
    return handled


def _move_kind(store: VectorStore, collection: str, rows: list[Any], shared: set[str]) -> list[str]:
    """Copy the kind's unshared old points to their new ids and delete the old ones; the ids to re-process."""
    unshared = {row.moved_from_point: row for row in rows if row.moved_from_point not in shared}
    found = {hit.id: hit for hit in store.retrieve(collection, list(unshared), with_vectors=True)}
    points = [
        VectorPoint(row.point_id, found[old].vector or [], found[old].payload)
        for old, row in unshared.items()
        if old in found
    ]
    store.upsert(collection, points)
    store.delete(collection, list({row.moved_from_point for row in rows}))
    return [
        row.id
        for row in rows
        if row.status == "done" and (row.moved_from_point in shared or row.moved_from_point not in found)
    ]
