"""Sentiment alerting: entity links and time buckets from processed news, rules, alert lifecycle.

After a batch, `record_links` writes each news event's entity links (with its sentiment) and
recounts the buckets they touch from the links themselves, so processing an event twice counts
it once and a late event lands in its own bucket; the batch does it in the transaction that marks
the news done. `evaluate` then runs the rules for the affected entities (the alerts queue, and
the beat sweep for every entity with recent news), in event time: the window is
SIFT_ALERT_WINDOW_S ending at the entity's latest news.

Rules (defaults from settings; per-entity overrides in the watchlist: enabled, min_volume,
threshold, severity):
- negative_share: negatives / linked news in the window >= SIFT_ALERT_NEGATIVE_SHARE;
- negative_spike: the window's negatives against the same-length windows of the trailing
  SIFT_ALERT_BASELINE_S: robust z = (x - median) / (1.4826 * MAD, at least 1) >= SIFT_ALERT_SPIKE_Z,
  with at least SIFT_ALERT_SPIKE_MIN_NEGATIVES negatives;
- sentiment_drop: the window's mean score (p(positive) - p(negative)) below the baseline's mean by
  SIFT_ALERT_DROP or more (the baseline needs 4 x min_volume news: a thin one is noise).
Every rule needs min_volume linked news in the window (SIFT_ALERT_MIN_VOLUME).

Lifecycle: one open alert per (entity, rule) (a partial unique index guards it). While the rule
holds, the open alert is updated (window, figures, evidence), not repeated; when it no longer
holds, the alert is `cleared`; `acknowledged` closes it by hand. After an alert of a rule closes,
the rule waits SIFT_ALERT_COOLDOWN_S before it opens a new one for the entity.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import metrics
from services.alerts import webhooks
from services.config import Settings
from services.db.lookup import require
from services.db.models import Alert, EntityLink, Event, SentimentBucket, WatchedEntity, as_utc
from services.errors import Conflict

SEVERITY = {"negative_share": "medium", "negative_spike": "high", "sentiment_drop": "medium"}


@dataclass(frozen=True)
class Fired:
    """A rule's verdict for an entity: whether it holds, with its figures and evidence."""

    rule: str
    holds: bool
    severity: str
    figures: dict[str, Any]
    event_ids: list[str]


@dataclass(frozen=True)
class Change:
    """What evaluation did to an alert: raised (new) or cleared."""

    alert_id: int
    event_type: str  # alert.raised or alert.cleared


def record_links(session: Session, *, event_ids: Sequence[str], settings: Settings, now: datetime) -> set[str]:
    """Write the links of done news events and recount their buckets; returns the entities touched."""
    events = list(session.scalars(select(Event).where(Event.id.in_(list(event_ids)), Event.kind == "news")))
    old = list(session.scalars(select(EntityLink).where(EntityLink.event_id.in_([e.id for e in events]))))
    touched = {(link.entity, as_utc(link.occurred_at)) for link in old}
    session.execute(delete(EntityLink).where(EntityLink.event_id.in_([e.id for e in events])))
    for event in events:
        if event.status != "done":
            continue
        when = as_utc(event.occurred_at or event.received_at)
        sentiment = (event.predictions or {}).get("sentiment") or {}
        probs = sentiment.get("probs") or {}
        score = float(probs.get("positive", 0.0)) - float(probs.get("negative", 0.0)) if probs else None
        for found in (event.predictions or {}).get("entity_links", []):
            session.add(
                EntityLink(
                    event_id=event.id,
                    entity=found["entity"],
                    method=found["method"],
                    sentiment=sentiment.get("label"),
                    score=score,
                    occurred_at=when,
                )
            )
            touched.add((found["entity"], when))
    session.flush()
    buckets_touched = {
        (entity, width, bucket_start(when, width))
        for entity, when in touched
        for width in settings.alert_bucket_widths_s
    }
    # each once, however many of the batch's news it holds; in one order, so concurrent batches
    # lock the same buckets in the same order (no deadlock)
    for entity, width, start in sorted(buckets_touched):
        _recount(session, entity=entity, width=width, start=start, now=now)
    return {entity for entity, _ in touched}


def bucket_start(when: datetime, width_s: int) -> datetime:
    """The start of the bucket of width_s seconds that holds a moment (buckets align to the epoch)."""
    seconds = int(when.timestamp()) // width_s * width_s
    return datetime.fromtimestamp(seconds, tz=UTC)


def _recount(session: Session, *, entity: str, width: int, start: datetime, now: datetime) -> None:
    rows = session.execute(
        select(EntityLink.sentiment, func.count(), func.coalesce(func.sum(EntityLink.score), 0.0))
        .where(
            EntityLink.entity == entity,
            EntityLink.occurred_at >= start,
            EntityLink.occurred_at < start + timedelta(seconds=width),
        )
        .group_by(EntityLink.sentiment)
    ).all()
    counts = {str(label): int(n) for label, n, _ in rows}
    score_sum = 0.0
    for _, _, summed in rows:
        score_sum += float(summed or 0.0)
    bucket = session.get(SentimentBucket, (entity, width, start))
    if bucket is None:
        bucket = SentimentBucket(entity=entity, width_s=width, start=start)
        session.add(bucket)
    bucket.negative, bucket.neutral, bucket.positive = (counts.get(k, 0) for k in ("negative", "neutral", "positive"))
    bucket.score_sum, bucket.updated_at = score_sum, now
    session.flush()


def buckets(session: Session, *, entity: str, width_s: int, since: datetime, until: datetime) -> list[SentimentBucket]:
    """An entity's buckets of one width in a time range, oldest first."""
    stmt = (
        select(SentimentBucket)
        .where(
            SentimentBucket.entity == entity,
            SentimentBucket.width_s == width_s,
            SentimentBucket.start >= since,
            SentimentBucket.start < until,
        )
        .order_by(SentimentBucket.start)
    )
    return list(session.scalars(stmt))


def latest_buckets(session: Session, *, entity: str, width_s: int, limit: int) -> list[SentimentBucket]:
    """An entity's latest `limit` buckets of one width, oldest first."""
    stmt = (
        select(SentimentBucket)
        .where(SentimentBucket.entity == entity, SentimentBucket.width_s == width_s)
        .order_by(SentimentBucket.start.desc())
        .limit(limit)
    )
    return list(reversed(session.scalars(stmt).all()))


def rule_settings(rule: str, watched: WatchedEntity | None, settings: Settings) -> dict[str, Any]:
    """A rule's parameters for an entity: the defaults, then the entity's overrides."""
    threshold = {
        "negative_share": settings.alert_negative_share,
        "negative_spike": settings.alert_spike_z,
        "sentiment_drop": settings.alert_drop,
    }[rule]
    base = {
        "enabled": True,
        "min_volume": settings.alert_min_volume,
        "threshold": threshold,
        "severity": SEVERITY[rule],
        "min_negatives": settings.alert_spike_min_negatives,  # read by negative_spike only
    }
    return {**base, **((watched.rules or {}).get(rule, {}) if watched else {})}


def judge(session: Session, *, entity: str, as_of: datetime, settings: Settings) -> list[Fired]:
    """Every enabled rule's verdict for an entity, for the window ending at as_of."""
    window = timedelta(seconds=settings.alert_window_s)
    baseline = timedelta(seconds=settings.alert_baseline_s)
    links = list(
        session.scalars(
            select(EntityLink)
            .where(EntityLink.entity == entity, EntityLink.occurred_at > as_of - window - baseline)
            .where(EntityLink.occurred_at <= as_of)
            .order_by(EntityLink.occurred_at)
        )
    )
    current = [x for x in links if as_utc(x.occurred_at) > as_of - window]
    past = [x for x in links if as_utc(x.occurred_at) <= as_of - window]
    watched = session.get(WatchedEntity, entity)
    verdicts = []
    for rule in SEVERITY:
        params = rule_settings(rule, watched, settings)
        if params["enabled"]:
            verdicts.append(_verdict(rule, params, current, past, as_of=as_of, window=window, baseline=baseline))
        else:  # a disabled rule holds nothing, so an alert it opened earlier clears
            verdicts.append(Fired(rule, False, str(params["severity"]), {"enabled": False}, []))
    return verdicts


def _verdict(
    rule: str,
    params: dict[str, Any],
    current: list[EntityLink],
    past: list[EntityLink],
    *,
    as_of: datetime,
    window: timedelta,
    baseline: timedelta,
) -> Fired:
    negatives = [x for x in current if x.sentiment == "negative"]
    figures: dict[str, Any] = {"volume": len(current), "negatives": len(negatives), "min_volume": params["min_volume"]}
    enough = len(current) >= params["min_volume"]
    if rule == "negative_share":
        share = len(negatives) / len(current) if current else 0.0
        figures.update(share=round(share, 4), threshold=params["threshold"])
        holds = enough and share >= params["threshold"]
    elif rule == "negative_spike":
        counts = _window_counts(past, as_of=as_of, window=window, baseline=baseline)
        median = statistics.median(counts) if counts else 0.0
        mad = statistics.median([abs(c - median) for c in counts]) if counts else 0.0
        z = (len(negatives) - median) / max(1.0, 1.4826 * mad)
        figures.update(baseline_median=median, baseline_mad=mad, z=round(z, 3), threshold=params["threshold"])
        holds = enough and len(negatives) >= params["min_negatives"] and z >= params["threshold"]
    else:
        mean_now = _mean(current)
        mean_before = _mean(past)
        drop = (mean_before - mean_now) if mean_now is not None and mean_before is not None else 0.0
        figures.update(mean=mean_now, baseline_mean=mean_before, drop=round(drop, 4), threshold=params["threshold"])
        holds = enough and len(past) >= 4 * params["min_volume"] and drop >= params["threshold"]
    evidence = [x.event_id for x in (negatives or current)][-50:]
    return Fired(rule, holds, str(params["severity"]), figures, evidence)


def _window_counts(past: list[EntityLink], *, as_of: datetime, window: timedelta, baseline: timedelta) -> list[int]:
    """Negatives in each window-long slice of the baseline (slices with no news count 0)."""
    slices = max(1, int(baseline / window))
    counts = [0] * slices
    start = as_of - window - baseline
    for x in past:
        if x.sentiment == "negative":
            index = int((as_utc(x.occurred_at) - start) / window)
            counts[min(slices - 1, max(0, index))] += 1
    return counts


def _mean(links: list[EntityLink]) -> float | None:
    scores = [x.score for x in links if x.score is not None]
    return round(sum(scores) / len(scores), 4) if scores else None


def evaluate(
    session: Session, *, entity: str, settings: Settings, now: datetime, as_of: datetime | None = None
) -> list[Change]:
    """Run the rules for an entity and open, update or clear its alerts; returns what changed."""
    if as_of is None:
        latest = session.scalar(select(func.max(EntityLink.occurred_at)).where(EntityLink.entity == entity))
        if latest is None:
            return []
        as_of = as_utc(latest)
    changes: list[Change] = []
    for fired in judge(session, entity=entity, as_of=as_of, settings=settings):
        current = find_open(session, entity=entity, rule=fired.rule)
        if current is not None and fired.holds:
            _refresh(current, fired, as_of=as_of, settings=settings, now=now)
        elif current is not None:
            current.state, current.closed_at, current.updated_at = "cleared", now, now
            changes.append(Change(current.id, "alert.cleared"))
        elif fired.holds:
            alert = _new_alert(entity, fired, as_of=as_of, settings=settings, now=now)
            opened = open_alert(session, alert, cooldown_s=settings.alert_cooldown_s, now=now)
            if opened is not None:
                changes.append(Change(opened, "alert.raised"))
    session.flush()
    return changes


def evaluate_and_notify(
    session: Session, *, entities: Iterable[str], settings: Settings, now: datetime
) -> tuple[list[Change], list[int]]:
    """Evaluate each entity, and queue a webhook delivery for every alert raised or cleared (in the
    same transaction, so a change and its deliveries commit together); returns the changes and the
    ids of the deliveries queued now."""
    changes = [c for entity in sorted(entities) for c in evaluate(session, entity=entity, settings=settings, now=now)]
    deliveries: list[int] = []
    for change in changes:
        alert = require(session, Alert, change.alert_id, missing=f"no alert {change.alert_id}")
        deliveries += webhooks.queue_deliveries(session, alert=alert, event_type=change.event_type, now=now)
    return changes, deliveries


def _refresh(alert: Alert, fired: Fired, *, as_of: datetime, settings: Settings, now: datetime) -> None:
    alert.window_start = as_of - timedelta(seconds=settings.alert_window_s)
    alert.window_end, alert.figures, alert.updated_at = as_of, fired.figures, now
    alert.event_ids = list(dict.fromkeys([*alert.event_ids, *fired.event_ids]))[-200:]


def find_open(session: Session, *, entity: str, rule: str) -> Alert | None:
    """The open alert of an entity and rule, if there is one (there is at most one)."""
    return session.scalar(select(Alert).where(Alert.entity == entity, Alert.rule == rule, Alert.state == "open"))


def open_alert(session: Session, alert: Alert, *, cooldown_s: int, now: datetime) -> int | None:
    """Insert a new open alert and count it, unless its entity and rule closed one less than
    cooldown_s ago or another worker opened one a moment ago (the partial unique index keeps one
    open per entity and rule); returns its id, or None when it was not opened."""
    since = now - timedelta(seconds=cooldown_s)
    closed = select(func.count()).select_from(Alert).where(Alert.entity == alert.entity, Alert.rule == alert.rule)
    if session.scalar(closed.where(Alert.closed_at >= since)):
        return None
    try:
        with session.begin_nested():
            session.add(alert)
    except IntegrityError:
        return None
    metrics.ALERTS_RAISED.labels(rule=alert.rule).inc()
    return alert.id


def _new_alert(entity: str, fired: Fired, *, as_of: datetime, settings: Settings, now: datetime) -> Alert:
    return Alert(
        entity=entity,
        rule=fired.rule,
        severity=fired.severity,
        state="open",
        window_start=as_of - timedelta(seconds=settings.alert_window_s),
        window_end=as_of,
        figures=fired.figures,
        event_ids=fired.event_ids,
        created_at=now,
        updated_at=now,
    )


def acknowledge(session: Session, *, alert_id: int, now: datetime | None = None) -> Alert:
    """Close an open alert by hand (NotFound, or Conflict when it is not open)."""
    alert = require(session, Alert, alert_id, missing=f"no alert {alert_id}")
    if alert.state != "open":
        raise Conflict(f"alert {alert_id} is {alert.state}, not open")
    now = now or datetime.now(UTC)
    alert.state, alert.closed_at, alert.updated_at = "acknowledged", now, now
    session.flush()
    return alert


def list_alerts(
    session: Session,
    *,
    entity: str | None = None,
    state: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[Alert]:
    """Alerts, newest first, filtered by entity, state, severity and creation time."""
    stmt = select(Alert).order_by(Alert.id.desc()).limit(limit)
    for column, value in ((Alert.entity, entity), (Alert.state, state), (Alert.severity, severity)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(Alert.created_at >= since)
    if until is not None:
        stmt = stmt.where(Alert.created_at < until)
    return list(session.scalars(stmt))


def with_open_alerts(session: Session) -> list[str]:
    """Entities that have an open alert (the beat sweep re-evaluates them)."""
    return list(session.scalars(select(Alert.entity).where(Alert.state == "open").distinct()))


def due_for_evaluation(session: Session, *, since: datetime) -> list[str]:
    """Entities the beat sweep evaluates: those with an open alert (a condition that passed
    clears) and those whose news changed since `since` (an evaluation whose message was lost, with
    a broker restart or a killed worker, still happens)."""
    recent = session.scalars(select(SentimentBucket.entity).where(SentimentBucket.updated_at >= since).distinct())
    return sorted(set(with_open_alerts(session)) | set(recent))
