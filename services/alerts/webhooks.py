"""Webhooks: alerts delivered as signed JSON POSTs, with retries and a delivery log.

What a receiver gets, per alert event and webhook::

    POST <url>
    Content-Type: application/json
    X-Sift-Event: alert.raised | alert.cleared
    X-Sift-Idempotency-Key: alert-<alert id>-<event type>-<webhook id>
    webhook-id: the idempotency key again (Standard Webhooks' message id)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>." + body)>

    {"alert": {...}, "event_type": ..., "idempotency_key": ...}   (compact, sorted keys)

Signed as the Standard Webhooks specification says (services/alerts/signing.py): the id and the
timestamp are part of the signed content, so a captured request cannot be replayed later than the
receiver's tolerance; a receiver verifies with the `standardwebhooks` library of its language.

Guarantee: at-least-once sending, exactly-once acceptance by a receiver that dedupes on the
idempotency key. A delivery row is queued once per key (a unique constraint, inserted with
on-conflict-do-nothing), and `deliver` sends only a row that is pending and due, claimed with a
conditional UPDATE that leases it for the length of one attempt, so a duplicate task message
sends nothing. The POST happens outside any transaction and its outcome is recorded afterwards:
a worker that dies after the POST but before recording leaves the row pending, and once the
lease runs out it is sent again with the same key. A 2xx answer marks it delivered; anything
else (or no answer) is retried with exponential backoff until `webhook_max_attempts`.

Every URL is checked when it is stored and again before each attempt, and the request goes to
the address that was checked (the Host header and TLS SNI keep the name), so a name that later
resolves to a loopback, private or link-local address (DNS rebinding) is refused, not sent to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services import metrics
from services.alerts.signing import key_of, signed_headers
from services.alerts.targets import check_url
from services.config import Settings
from services.db.lookup import require
from services.db.models import Alert, Webhook, WebhookDelivery, as_utc
from services.errors import InvalidInput, NotFound

EventType = Literal["alert.raised", "alert.cleared"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
MAX_BACKOFF_S = 3600.0
MAX_ADDRESSES = 3  # resolved addresses one attempt tries to connect to
ERROR_CHARS = 500

Sessions = Callable[[], AbstractContextManager[Session]]


def _default_event_types() -> list[EventType]:
    return ["alert.raised"]


class WebhookIn(BaseModel):
    """A webhook as a client sends it (the id is in the path)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http or https; private and loopback hosts are refused")
    secret: str = Field(
        min_length=16,
        max_length=256,
        description="signs every delivery (Standard Webhooks): a whsec_<base64> secret, or a plain one whose "
        "UTF-8 bytes are the key (the same as whsec_ + base64 of it)",
    )
    event_types: list[EventType] = Field(default_factory=_default_event_types, min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.strip()

    @field_validator("secret")
    @classmethod
    def _usable_key(cls, value: str) -> str:
        if len(key_of(value)) < 16:  # raises ValueError for a whsec_ secret that is not base64
            raise ValueError("the key must be at least 16 bytes")
        return value

    @field_validator("event_types")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def put_webhook(
    session: Session, *, webhook_id: str, body: WebhookIn, allow_private: bool, now: datetime | None = None
) -> Webhook:
    """Create or replace a webhook after checking its id and URL."""
    if not 1 <= len(webhook_id) <= 64 or not webhook_id.isprintable() or "/" in webhook_id:
        raise InvalidInput("webhook id must be 1 to 64 printable characters, without '/'")
    check_url(body.url, allow_private=allow_private)
    now = _utc(now)
    row = session.get(Webhook, webhook_id)
    if row is None:
        row = Webhook(id=webhook_id, created_at=now)
        session.add(row)
    row.url, row.secret, row.event_types, row.updated_at = body.url, body.secret, list(body.event_types), now
    session.flush()
    return row


def get_webhook(session: Session, *, webhook_id: str) -> Webhook:
    """A webhook by id, or NotFound."""
    return require(session, Webhook, webhook_id, missing=f"no webhook with id {webhook_id!r}")


def list_webhooks(session: Session) -> list[Webhook]:
    """Every webhook, in id order."""
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def delete_webhook(session: Session, *, webhook_id: str) -> None:
    """Remove a webhook (NotFound when missing); its pending deliveries fail, its log stays."""
    session.delete(get_webhook(session, webhook_id=webhook_id))
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error="the webhook was deleted")
        .execution_options(synchronize_session=False)
    )
    session.flush()


def queue_deliveries(session: Session, *, alert: Alert, event_type: str, now: datetime) -> list[int]:
    """One delivery per webhook subscribed to event_type; a key queued before is skipped.
    Returns the ids of the deliveries created by this call."""
    if event_type not in EVENT_TYPES:
        raise InvalidInput(f"unknown webhook event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
    now = _utc(now)
    common = {"alert_id": alert.id, "event_type": event_type, "status": "pending", "attempts": 0}
    common.update(next_attempt_at=now, created_at=now)
    rows = []
    for hook in list_webhooks(session):
        if event_type in hook.event_types:
            key = f"alert-{alert.id}-{event_type}-{hook.id}"
            payload = {"idempotency_key": key, "event_type": event_type, "alert": alert_payload(alert)}
            rows.append({**common, "webhook_id": hook.id, "idempotency_key": key, "payload": payload})
    return _insert_new(session, rows) if rows else []


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    # INSERT .. ON CONFLICT DO NOTHING: two workers queueing the same alert at once both succeed, once.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert(WebhookDelivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(WebhookDelivery.id)
    )
    return sorted(session.scalars(stmt))


def alert_payload(alert: Alert) -> dict[str, Any]:
    """An alert as webhook bodies carry it (ISO datetimes)."""
    return {
        "id": alert.id,
        "entity": alert.entity,
        "rule": alert.rule,
        "severity": alert.severity,
        "state": alert.state,
        "window_start": as_utc(alert.window_start).isoformat(),
        "window_end": as_utc(alert.window_end).isoformat(),
        "figures": dict(alert.figures or {}),
        "event_ids": list(alert.event_ids or []),
    }


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes that are sent and signed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Attempt:
    url: str
    secret: str
    event_type: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    error: str | None
    connected: bool = True  # False: the connection failed, so nothing was sent

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def deliver(
    sessions: Sessions, *, delivery_id: int, settings: Settings, client: httpx.Client, now: datetime | None = None
) -> str:
    """Send one delivery if it is pending and due, record the outcome; returns its status."""
    now = _utc(now)
    lease = now + timedelta(seconds=max(60.0, 2 * (MAX_ADDRESSES + 1) * settings.webhook_timeout_s))
    with sessions() as session:
        claimed = _claim(session, delivery_id=delivery_id, now=now, lease=lease)
    if isinstance(claimed, str):
        return claimed
    outcome = _send(claimed, settings=settings, client=client, now=now)
    with sessions() as session:
        status = _record(session, delivery_id=delivery_id, outcome=outcome, settings=settings, now=now)
    attempt = "delivered" if outcome.ok else "failed" if status == "failed" else "retry"
    metrics.WEBHOOK_DELIVERIES.labels(outcome=attempt).inc()
    return status


def _claim(session: Session, *, delivery_id: int, now: datetime, lease: datetime) -> _Attempt | str:
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:
        raise NotFound(f"no webhook delivery with id {delivery_id}")
    if row.status != "pending" or as_utc(row.next_attempt_at) > now:
        return row.status
    hook = session.get(Webhook, row.webhook_id)
    if hook is None:
        row.status, row.last_error = "failed", "the webhook was deleted"
        return row.status
    # The conditional UPDATE is the claim: of two workers holding the same id, one sends.
    taken = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=lease)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], taken).rowcount != 1:
        return "pending"
    return _Attempt(hook.url, hook.secret, row.event_type, row.idempotency_key, dict(row.payload))


def _send(attempt: _Attempt, *, settings: Settings, client: httpx.Client, now: datetime) -> _Outcome:
    try:
        addresses = check_url(attempt.url, allow_private=settings.webhook_allow_private)
    except InvalidInput as exc:  # e.g. the name now resolves to a private address
        return _Outcome(None, f"not sent: {exc.message}")
    body = body_bytes(attempt.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Sift-Webhooks/1",
        "X-Sift-Event": attempt.event_type,
        "X-Sift-Idempotency-Key": attempt.key,
        **signed_headers(attempt.secret, body, message_id=attempt.key, timestamp=int(now.timestamp())),
    }
    url = httpx.URL(attempt.url)
    headers["Host"] = url.netloc.decode("ascii")  # the name, while the connection goes to the checked address
    outcome = _Outcome(None, "no address to connect to", connected=False)
    for address in addresses[:MAX_ADDRESSES]:
        outcome = _post(client, url, address, body, headers, timeout_s=settings.webhook_timeout_s)
        if outcome.connected:  # only after a failed connect is the next address safe to try
            break
    return outcome


def _post(
    client: httpx.Client, url: httpx.URL, address: str, body: bytes, headers: dict[str, str], *, timeout_s: float
) -> _Outcome:
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    try:
        with client.stream(
            "POST",
            url.copy_with(host=address),
            content=body,
            headers=headers,
            timeout=timeout_s,
            follow_redirects=False,
            extensions=extensions,
        ) as response:
            if 200 <= response.status_code < 300:
                return _Outcome(response.status_code, None)
            text = next(response.iter_bytes(ERROR_CHARS), b"")[:ERROR_CHARS].decode("utf-8", "replace")
            return _Outcome(response.status_code, f"HTTP {response.status_code}: {text}".strip())
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.InvalidURL) as exc:
        return _Outcome(None, f"could not connect to {address}: {type(exc).__name__}: {exc}"[:ERROR_CHARS], False)
    except httpx.HTTPError as exc:
        return _Outcome(None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])


def _record(session: Session, *, delivery_id: int, outcome: _Outcome, settings: Settings, now: datetime) -> str:
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:
        raise NotFound(f"no webhook delivery with id {delivery_id}")
    if row.status != "pending":
        return row.status
    row.attempts += 1
    row.last_status = outcome.status
    if outcome.ok:
        row.status, row.delivered_at = "delivered", now
        return row.status
    row.last_error = outcome.error
    delay = min(MAX_BACKOFF_S, settings.webhook_backoff_s * 2 ** (row.attempts - 1))
    row.next_attempt_at = now + timedelta(seconds=delay)
    if row.attempts >= settings.webhook_max_attempts:
        row.status = "failed"
    return row.status


def due_deliveries(session: Session, *, now: datetime, limit: int = 100) -> list[int]:
    """Ids of pending deliveries whose next attempt is due, oldest first."""
    stmt = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= _utc(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def delivery_log(session: Session, *, webhook_id: str, limit: int) -> list[WebhookDelivery]:
    """A webhook's deliveries, newest first (NotFound for an unknown webhook)."""
    get_webhook(session, webhook_id=webhook_id)
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def _utc(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else as_utc(now).astimezone(UTC)
