"""Webhook signatures: what a receiver checks, computed independently of the sender."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.alerts.signing import sign, signature_header, verify
from services.alerts.webhooks import WebhookIn, body_bytes

SECRET = "s3cret-s3cret-s3cret"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
BODY = body_bytes({"idempotency_key": "alert-1-alert.raised-hook", "event_type": "alert.raised", "alert": {"id": 1}})


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, TS) == expected
    assert signature_header(SECRET, BODY, TS) == f"t={TS},v1={expected}"


def test_a_fresh_untampered_request_verifies() -> None:
    header = signature_header(SECRET, BODY, TS)
    assert verify(SECRET, BODY, header, now=NOW)
    assert verify(SECRET, BODY, header, now=NOW + timedelta(seconds=299))
    # A receiver rotating secrets may get several v1 values; one matching is enough.
    assert verify(SECRET, BODY, f"t={TS},v1={'0' * 64},v1={sign(SECRET, BODY, TS)}", now=NOW)


def test_body_bytes_are_compact_with_sorted_keys() -> None:
    assert body_bytes({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    ("secret", "body", "header", "now"),
    [
        pytest.param(SECRET, BODY + b" ", None, NOW, id="tampered body"),
        pytest.param(SECRET, BODY.replace(b'"id":1', b'"id":2'), None, NOW, id="tampered field"),
        pytest.param("another-secret-of-16+", BODY, None, NOW, id="wrong secret"),
        pytest.param(SECRET, BODY, None, NOW + timedelta(seconds=301), id="stale timestamp"),
        pytest.param(SECRET, BODY, None, NOW - timedelta(seconds=301), id="timestamp from the future"),
        pytest.param(SECRET, BODY, f"t={TS + 1},v1={sign(SECRET, BODY, TS)}", NOW, id="timestamp swapped"),
        pytest.param(SECRET, BODY, f"v1={sign(SECRET, BODY, TS)}", NOW, id="no timestamp"),
        pytest.param(SECRET, BODY, f"t={TS}", NOW, id="no signature"),
        pytest.param(SECRET, BODY, "garbage", NOW, id="malformed"),
    ],
)
def test_anything_else_does_not_verify(secret: str, body: bytes, header: str | None, now: datetime) -> None:
    assert not verify(secret, body, header or signature_header(SECRET, BODY, TS), now=now)


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
    ):
        with pytest.raises(ValidationError):
            WebhookIn(**bad)
