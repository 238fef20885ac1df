"""Rate limit per client: a token bucket per key, kept in this process (each API replica limits on
its own, so a fleet of N replicas behind a balancer admits up to N times the rate).

Over the limit, a request is answered 429 with `Retry-After` (whole seconds) and the JSON error
envelope before it is read or routed. /healthz, /readyz and /metrics are never limited: probes and
scrapes must answer however busy a client is.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.errors import error_body

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})


def bearer_token(scope: Scope) -> str | None:
    """The token of the request's `Authorization: Bearer` header, if any."""
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def client_key(scope: Scope) -> str:
    """Who a request counts against: its API key (the bearer token, hashed so no secret is kept:
    one bucket per key, counted before the key is checked, so a flood of bad keys is limited too),
    else the client address."""
    token = bearer_token(scope)
    if token is not None:
        return "token:" + hashlib.sha256(token.encode("latin-1")).hexdigest()[:32]
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:unknown"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Thread-safe token buckets, one per key: each refills at rate_per_s up to burst tokens, and
    a request takes one. At most max_keys buckets are kept; the least recently used is dropped
    first, which forgets little: a bucket untouched for burst / rate_per_s seconds is full anyway."""

    def __init__(
        self, *, rate_per_s: float, burst: int, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_keys >= 1")
        self.rate_per_s, self.burst, self.max_keys = rate_per_s, burst, max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for key: 0.0 when there was one, else the seconds until there is one."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate_per_s

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class RateLimit:
    """Plain-ASGI middleware: a request over its client's rate is answered 429 with Retry-After."""

    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in EXEMPT:
            wait_s = self.buckets.take(client_key(scope))
            if wait_s > 0:
                retry_after = max(1, math.ceil(wait_s))
                b = self.buckets
                message = (
                    f"rate limit exceeded: at most {b.rate_per_s:g} requests/s per client (bursts of {b.burst}); "
                    f"retry after {retry_after} s, or send more per request (batches) and fewer requests"
                )
                body = error_body("rate_limited", message, {"retry_after_s": retry_after})
                response = JSONResponse(body, status_code=429, headers={"Retry-After": str(retry_after)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
