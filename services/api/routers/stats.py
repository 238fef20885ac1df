"""GET /v1/stats: events by kind and status, queue depths, throughput over the last 1/5/15 minutes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from services.api.deps import SessionDep
from services.config import QUEUES
from services.db import events as repo
from services.enqueue import queue_depths

router = APIRouter(prefix="/v1", tags=["stats"])

THROUGHPUT_MINUTES = (1, 5, 15)


class Stats(BaseModel):
    """A snapshot of the system's work."""

    events: dict[str, dict[str, int]]
    queues: dict[str, int | None]
    processed_last_minute: int
    throughput: dict[str, float] = Field(
        description="events finished (done or failed) per minute, averaged over the last 1, 5 and 15 minutes"
    )


@router.get("/stats", response_model=Stats)
def stats(request: Request, session: SessionDep) -> Stats:
    """Counts by kind and status, queue depths (None when the broker does not answer), events per minute."""
    now = datetime.now(UTC)
    finished = {m: repo.processed_since(session, since=repo.window(now, 60 * m)) for m in THROUGHPUT_MINUTES}
    return Stats(
        events=repo.counts(session),
        queues=queue_depths(request.app.state.enqueuer_app, QUEUES),
        processed_last_minute=finished[1],
        throughput={f"{m}m": round(n / m, 2) for m, n in finished.items()},
    )
