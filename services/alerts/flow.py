"""What the alert tasks do, with what follows them sent through the caller's sender: processed news
is linked, evaluated and its webhook deliveries sent; the beat's sweep re-evaluates and re-sends due
deliveries. A delivery whose message is lost is sent again by the next sweep."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from services.alerts import rules, webhooks
from services.config import Settings
from services.errors import BrokerUnavailable
from services.task_names import WEBHOOK_DELIVER, Sender

log = logging.getLogger(__name__)


def process_news(
    sessions: Callable[[], Any], *, event_ids: Sequence[str], settings: Settings, now: datetime, send: Sender
) -> dict[str, object]:
    """Link processed news to entities (the ingest batch did already: linking is idempotent),
    recount their buckets, evaluate the rules for them, and send the webhook deliveries of alerts
    raised or cleared."""
    with sessions() as session:
        entities = rules.record_links(session, event_ids=event_ids, settings=settings, now=now)
        changes, deliveries = rules.evaluate_and_notify(session, entities=entities, settings=settings, now=now)
    _send_deliveries(deliveries, settings=settings, send=send)
    return {"entities": len(entities), "changes": len(changes), "deliveries": len(deliveries)}


def sweep(sessions: Callable[[], Any], *, settings: Settings, now: datetime, send: Sender) -> tuple[int, int]:
    """Re-evaluate entities with open alerts or recent news (a condition that passed clears, an
    evaluation whose message was lost happens) and send every due delivery (retries, or messages
    lost with a worker or the broker); returns (alert changes, deliveries sent)."""
    since = now - timedelta(seconds=settings.alert_window_s)
    with sessions() as session:
        entities = rules.due_for_evaluation(session, since=since)
        made, _ = rules.evaluate_and_notify(session, entities=entities, settings=settings, now=now)
        due = webhooks.due_deliveries(session, now=now)  # includes what was just queued
    _send_deliveries(due, settings=settings, send=send)
    return len(made), len(due)


def _send_deliveries(delivery_ids: Sequence[int], *, settings: Settings, send: Sender) -> None:
    for delivery_id in delivery_ids:
        try:
            send(WEBHOOK_DELIVER, delivery_id, settings.tenant)
        except BrokerUnavailable:  # queued in SQL: the beat's sweep sends it
            log.warning("broker down: delivery %s waits for the sweep", delivery_id)
