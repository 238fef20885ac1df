"""Webhook signatures: HMAC-SHA256 over "<unix seconds>." + body, sent as
`X-Sift-Signature: t=<unix seconds>,v1=<hex>`; `verify` is the reference check (constant-time)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from services.db.models import as_utc

SIGNATURE_HEADER = "X-Sift-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of f"{timestamp}." + body under secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Sift-Signature value: t=<unix seconds>,v1=<hex>."""
    return f"t={timestamp},v1={sign(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: float = 300, now: datetime | None = None) -> bool:
    """True when header signs body under secret and its timestamp is within tolerance_s of now."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if (
        timestamp is None
        or abs((datetime.now(UTC) if now is None else as_utc(now)).timestamp() - timestamp) > tolerance_s
    ):
        return False
    expected = sign(secret, body, timestamp)
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates)
