"""The watchlist (`PUT/GET/DELETE /v1/watchlist/{entity}`, `GET /v1/watchlist`) and alerts
(`GET /v1/alerts`, `POST /v1/alerts/{id}/ack`), and an entity's sentiment over time
(`GET /v1/watchlist/{entity}/sentiment`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from services.alerts import rules as alerts
from services.alerts import watchlist
from services.api import errors
from services.api.deps import SQL_INT_MAX, RuntimeDep, SessionDep
from services.db.models import Alert, SentimentBucket, as_utc
from services.errors import InvalidInput
from services.timestamps import Timestamp

router = APIRouter(prefix="/v1", tags=["alerts"])


class WatchOut(BaseModel):
    """A watched entity."""

    entity: str
    name: str
    ticker: str | None
    aliases: list[str]
    rules: dict[str, dict[str, Any]]


class WatchList(BaseModel):
    """The whole watchlist."""

    entities: list[WatchOut]


class AlertOut(BaseModel):
    """An alert with its rule, window, figures and the events that caused it."""

    id: int
    entity: str
    rule: str
    severity: str
    state: str
    window_start: datetime
    window_end: datetime
    figures: dict[str, Any]
    event_ids: list[str]
    created_at: datetime
    closed_at: datetime | None


class AlertList(BaseModel):
    """Alerts, newest first."""

    alerts: list[AlertOut]


class BucketOut(BaseModel):
    """One time bucket of an entity's linked news: counts by sentiment and the mean score."""

    start: datetime
    negative: int
    neutral: int
    positive: int
    mean_score: float | None


class Sentiment(BaseModel):
    """An entity's latest buckets of one width, oldest first."""

    entity: str
    width_s: int
    widths_s: list[int]
    buckets: list[BucketOut]


@router.put("/watchlist/{entity}", response_model=WatchOut)
def put_watch(entity: str, body: watchlist.WatchIn, session: SessionDep) -> WatchOut:
    """Watch a company (create or replace); news is linked to it from now on."""
    return WatchOut(**watchlist.as_dict(watchlist.put(session, entity=entity, body=body)))


@router.get("/watchlist", response_model=WatchList)
def list_watch(session: SessionDep) -> WatchList:
    """Every watched entity."""
    return WatchList(entities=[WatchOut(**watchlist.as_dict(r)) for r in watchlist.all_entities(session)])


@router.get("/watchlist/{entity}", response_model=WatchOut)
def get_watch(entity: str, session: SessionDep) -> WatchOut:
    """One watched entity."""
    return WatchOut(**watchlist.as_dict(watchlist.get(session, entity=entity)))


@router.delete("/watchlist/{entity}", status_code=204)
def delete_watch(entity: str, session: SessionDep) -> None:
    """Stop watching an entity."""
    watchlist.delete(session, entity=entity)


@router.get("/watchlist/{entity}/sentiment", response_model=Sentiment)
def get_sentiment(
    entity: str,
    session: SessionDep,
    runtime: RuntimeDep,
    width_s: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 48,
) -> Sentiment:
    """The entity's sentiment over time: its latest buckets of one width (default the narrowest)."""
    widths = sorted(runtime.settings.alert_bucket_widths_s)
    width = width_s if width_s is not None else widths[0]
    if width not in widths:
        raise InvalidInput(f"width_s {width}: buckets are kept for {widths} seconds (SIFT_ALERT_BUCKET_WIDTHS_S)")
    rows = alerts.latest_buckets(session, entity=entity, width_s=width, limit=limit)
    return Sentiment(entity=entity, width_s=width, widths_s=widths, buckets=[_bucket(b) for b in rows])


def _bucket(row: SentimentBucket) -> BucketOut:
    n = row.negative + row.neutral + row.positive
    mean = round(row.score_sum / n, 4) if n else None
    return BucketOut(
        start=as_utc(row.start), negative=row.negative, neutral=row.neutral, positive=row.positive, mean_score=mean
    )


@router.get("/alerts", response_model=AlertList)
def get_alerts(
    session: SessionDep,
    entity: str | None = None,
    state: Literal["open", "acknowledged", "cleared"] | None = None,
    severity: Literal["low", "medium", "high"] | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> AlertList:
    """Alerts, newest first; filters: entity, state, severity, created since/until."""
    rows = alerts.list_alerts(
        session, entity=entity, state=state, severity=severity, since=since, until=until, limit=limit
    )
    return AlertList(alerts=[alert_out(r) for r in rows])


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut, responses=errors.responses(409))
def ack_alert(alert_id: Annotated[int, Path(ge=1, le=SQL_INT_MAX)], session: SessionDep) -> AlertOut:
    """Acknowledge an open alert: it closes, and the rule cools down before it fires again."""
    return alert_out(alerts.acknowledge(session, alert_id=alert_id))


def alert_out(row: Alert) -> AlertOut:
    """The public form of an alert."""
    return AlertOut(
        id=row.id,
        entity=row.entity,
        rule=row.rule,
        severity=row.severity,
        state=row.state,
        window_start=as_utc(row.window_start),
        window_end=as_utc(row.window_end),
        figures=row.figures,
        event_ids=row.event_ids,
        created_at=as_utc(row.created_at),
        closed_at=as_utc(row.closed_at) if row.closed_at else None,
    )
