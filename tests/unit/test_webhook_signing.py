"""Webhook signatures: what a receiver checks, with the Standard Webhooks reference library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.alerts.signing import key_of, signed_headers, verify, whsec
from services.alerts.webhooks import WebhookIn, body_bytes

SECRET = "s3cret-s3cret-s3cret"
BODY = body_bytes({"idempotency_key": "alert-1-alert.raised-hook", "event_type": "alert.raised", "alert": {"id": 1}})
KEY = "alert-1-alert.raised-hook"


def test_a_receiver_verifies_with_the_library_given_the_whsec_form_of_a_plain_secret() -> None:
    now = int(time.time())
    headers = signed_headers(SECRET, BODY, message_id=KEY, timestamp=now)
    assert headers["webhook-id"] == KEY and headers["webhook-timestamp"] == str(now)
    receiver = Webhook("whsec_" + base64.b64encode(SECRET.encode()).decode())  # what docs/alerts.md says
    assert receiver.verify(BODY, headers) == {"alert": {"id": 1}, "event_type": "alert.raised", "idempotency_key": KEY}
    assert whsec(SECRET) == "whsec_" + base64.b64encode(SECRET.encode()).decode()
    # The spec's content: "<id>.<timestamp>.<body>", HMAC-SHA256, base64, "v1," in front.
    digest = hmac.new(SECRET.encode(), f"{KEY}.{now}.".encode() + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_a_whsec_secret_is_used_as_the_spec_says() -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
    assert key_of(secret) == b"0123456789abcdef0123"
    headers = signed_headers(secret, BODY, message_id=KEY, timestamp=int(time.time()))
    Webhook(secret).verify(BODY, headers)
    assert verify(secret, BODY, headers)


def test_body_bytes_are_compact_with_sorted_keys() -> None:
    assert body_bytes({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    ("secret", "body", "change", "age_s"),
    [
        pytest.param(SECRET, BODY + b" ", {}, 0, id="tampered body"),
        pytest.param(SECRET, BODY.replace(b'"id":1', b'"id":2'), {}, 0, id="tampered field"),
        pytest.param("another-secret-of-16+", BODY, {}, 0, id="wrong secret"),
        pytest.param(SECRET, BODY, {}, 301, id="stale timestamp"),
        pytest.param(SECRET, BODY, {}, -301, id="timestamp from the future"),
        pytest.param(SECRET, BODY, {"webhook-id": "alert-2-alert.raised-hook"}, 0, id="id swapped"),
        pytest.param(SECRET, BODY, {"webhook-signature": "v1,garbage"}, 0, id="malformed"),
    ],
)
def test_anything_else_does_not_verify(secret: str, body: bytes, change: dict[str, str], age_s: int) -> None:
    headers = {**signed_headers(SECRET, BODY, message_id=KEY, timestamp=int(time.time()) - age_s), **change}
    assert not verify(secret, body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec(secret)).verify(body, headers)


def test_signing_at_a_given_time_matches_the_library() -> None:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    headers = signed_headers(SECRET, BODY, message_id=KEY, timestamp=int(at.timestamp()))
    assert headers["webhook-signature"] == Webhook(whsec(SECRET)).sign(KEY, at, BODY.decode())


def test_webhook_input_is_checked() -> None:
    ok = WebhookIn(url="https://hooks.example.com/sift", secret="x" * 16)
    assert ok.event_types == ["alert.raised"]
    for bad in (
        {"url": "https://hooks.example.com/sift", "secret": "short"},
        {"url": "ftp://hooks.example.com/sift", "secret": "x" * 16},
        {"url": "https://" + "a" * 2000 + ".com/", "secret": "x" * 16},
        {"url": "https://hooks.example.com/sift", "secret": "x" * 16, "event_types": ["alert.exploded"]},
        {"url": "https://hooks.example.com/sift", "secret": "x" * 16, "event_types": []},
        {"url": "https://hooks.example.com/sift", "secret": "x" * 16, "extra": 1},
        {"url": "https://hooks.example.com/sift", "secret": "whsec_not base64!!"},
        {"url": "https://hooks.example.com/sift", "secret": "whsec_" + base64.b64encode(b"short").decode()},
    ):
        with pytest.raises(ValidationError):
            WebhookIn(**bad)
