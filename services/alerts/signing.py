"""Webhook signatures as the Standard Webhooks specification says, made with its reference library
(`standardwebhooks`), so a receiver verifies with the same library in its own language:

    webhook-id: <the delivery's idempotency key; the same on every retry>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The key: a secret of the form `whsec_<base64>` is the spec's own (the key is the decoded bytes);
any other secret is a plain shared secret whose UTF-8 bytes are the key, which is the same key as
`whsec_` + base64(secret): `whsec(secret)` gives that form, for receivers whose library wants it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PREFIX = "whsec_"
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"


def key_of(secret: str) -> bytes:
    """The HMAC key of a secret: a whsec_ secret's decoded bytes, else the plain secret's UTF-8 bytes."""
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret[len(PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError("a secret that starts with whsec_ must be base64 after the prefix") from exc
    return secret.encode()


def whsec(secret: str) -> str:
    """The whsec_ form of a secret (the same key), as Standard Webhooks libraries take it."""
    return PREFIX + base64.b64encode(key_of(secret)).decode()


def signed_headers(secret: str, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt of body."""
    at = datetime.fromtimestamp(timestamp, UTC)
    signature = Webhook(key_of(secret)).sign(message_id, at, body.decode())
    return {ID_HEADER: message_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """True when headers sign body under secret and the timestamp is within the library's tolerance
    (five minutes of now); what a receiver does, with the spec's library."""
    try:
        Webhook(key_of(secret)).verify(body, {k.lower(): v for k, v in headers.items()})
    except (WebhookVerificationError, ValueError):
        return False
    return True
