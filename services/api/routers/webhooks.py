"""Webhooks for alerts: PUT/GET/DELETE /v1/webhooks/{id}, GET /v1/webhooks, and the delivery log
GET /v1/webhooks/{id}/deliveries. The secret is write-only: no response carries it."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.alerts import webhooks
from services.api.deps import RuntimeDep, SessionDep
from services.db.models import Webhook, WebhookDelivery, as_utc

router = APIRouter(prefix="/v1", tags=["alerts"])


class WebhookOut(BaseModel):
    """A webhook as stored, without its secret."""

    id: str
    url: str
    event_types: list[str]
    created_at: datetime
    updated_at: datetime


class WebhookList(BaseModel):
    """Every webhook, in id order."""

    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    """One alert event sent (or being sent) to a webhook. attempts counts every POST tried;
    last_status is the HTTP status of the latest one, last_error the latest failure."""

    id: int
    alert_id: int
    event_type: str
    idempotency_key: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None


class DeliveryLog(BaseModel):
    """A webhook's deliveries, newest first."""

    deliveries: list[DeliveryOut]


def _out(row: Webhook) -> WebhookOut:
    return WebhookOut(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _delivery(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        alert_id=row.alert_id,
        event_type=row.event_type,
        idempotency_key=row.idempotency_key,
        status=row.status,
        attempts=row.attempts,
        last_status=row.last_status,
        last_error=row.last_error,
        next_attempt_at=as_utc(row.next_attempt_at),
        delivered_at=as_utc(row.delivered_at) if row.delivered_at else None,
    )


@router.put("/webhooks/{webhook_id}", response_model=WebhookOut)
def put_webhook(webhook_id: str, body: webhooks.WebhookIn, runtime: RuntimeDep) -> WebhookOut:
    """Create or replace a webhook; a URL on a private or loopback address is refused (422)."""
    with runtime.db.session_scope() as session:
        row = webhooks.put_webhook(
            session, webhook_id=webhook_id, body=body, allow_private=runtime.settings.webhook_allow_private
        )
        return _out(row)


@router.get("/webhooks", response_model=WebhookList)
def list_webhooks(session: SessionDep) -> WebhookList:
    """Every webhook."""
    return WebhookList(webhooks=[_out(row) for row in webhooks.list_webhooks(session)])


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut)
def get_webhook(webhook_id: str, session: SessionDep) -> WebhookOut:
    """One webhook."""
    return _out(webhooks.get_webhook(session, webhook_id=webhook_id))


@router.delete("/webhooks/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: str, runtime: RuntimeDep) -> None:
    """Remove a webhook; its pending deliveries are not sent, its delivery log is kept."""
    with runtime.db.session_scope() as session:
        webhooks.delete_webhook(session, webhook_id=webhook_id)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=DeliveryLog)
def list_deliveries(webhook_id: str, session: SessionDep, limit: int = Query(100, ge=1, le=1000)) -> DeliveryLog:
    """The delivery log of a webhook, newest first."""
    rows = webhooks.delivery_log(session, webhook_id=webhook_id, limit=limit)
    return DeliveryLog(deliveries=[_delivery(row) for row in rows])
