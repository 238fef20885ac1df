"""Who may call what: every route but /healthz, /readyz and /metrics needs an API key
(`Authorization: Bearer <key>`) with the scope that ROUTE_SCOPES gives the route. The key's tenant
then picks the runtime every dependency of the request uses (services/api/deps.py), so a handler
cannot reach another tenant's tables or collections.

A route missing from ROUTE_SCOPES needs admin (tests/unit/test_route_scopes.py keeps the table
complete)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from services import tenants
from services.api.rate_limit import EXEMPT
from services.errors import Forbidden, Unauthorized
from services.runtime import Runtime
from services.tenants import Principal

ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/v1/events"): "ingest",
    ("POST", "/v1/interactions"): "ingest",
    ("GET", "/v1/events/{event_id}"): "read",
    ("GET", "/v1/stats"): "read",
    ("GET", "/v1/tasks"): "read",
    ("GET", "/v1/training/runs/{run_id}"): "read",
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/faqs/{faq_id}"): "read",
    ("GET", "/v1/faqs"): "read",
    ("POST", "/v1/match"): "read",
    ("GET", "/v1/watchlist/{entity}"): "read",
    ("GET", "/v1/watchlist"): "read",
    ("GET", "/v1/alerts"): "read",
    ("GET", "/v1/users/{user_id}/feed"): "read",
    ("POST", "/v1/users/{user_id}/rank"): "read",
    ("GET", "/v1/items/{item_id}/similar"): "read",
    ("GET", "/v1/drift"): "read",
    ("POST", "/v1/labels"): "label",
    ("POST", "/v1/alerts/{alert_id}/ack"): "label",
    ("POST", "/v1/tasks"): "admin",
    ("POST", "/v1/training/runs"): "admin",
    ("POST", "/v1/models/{version}/activate"): "admin",
    ("PUT", "/v1/faqs/{faq_id}"): "admin",
    ("DELETE", "/v1/faqs/{faq_id}"): "admin",
    ("POST", "/v1/faqs:bulk"): "admin",
    ("POST", "/v1/faqs/{faq_id}/paraphrases"): "admin",
    ("POST", "/v1/match:calibrate"): "admin",
    ("PUT", "/v1/watchlist/{entity}"): "admin",
    ("DELETE", "/v1/watchlist/{entity}"): "admin",
    ("PUT", "/v1/webhooks/{webhook_id}"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}"): "admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "admin",
    ("GET", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "admin",
    ("DELETE", "/v1/items/{item_id}"): "admin",
}


def scope_for(method: str, path: str) -> str:
    """The scope a route needs (admin for one not in the table: closed by default)."""
    method = "GET" if method == "HEAD" else method
    return ROUTE_SCOPES.get((method, path), "admin")


class KeyCache:
    """Key lookups for a few seconds (SIFT_KEY_CACHE_S), so a stream of requests does not read the
    keys table once each; unknown keys are remembered too. At most max_keys entries, oldest out first."""

    def __init__(self, root: Runtime, *, ttl_s: float, max_keys: int = 10_000) -> None:
        self._root = root
        self._ttl = ttl_s
        self._max = max_keys
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._lock = threading.Lock()
        secret = root.settings.api_keys.get_secret_value() if root.settings.api_keys else ""
        self._env_keys = tuple(k.strip() for k in secret.split(",") if k.strip())

    async def principal(self, token: str) -> Principal | None:
        """The principal of a key, from the cache when it is fresh."""
        digest = tenants.token_hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await run_in_threadpool(self._lookup, token)
        with self._lock:
            self._entries[digest] = (now + self._ttl, found)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return found

    def _lookup(self, token: str) -> Principal | None:
        with self._root.control_db.session_scope() as session:
            return tenants.authenticate(session, token=token, env_keys=self._env_keys)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def authorize(request: Request) -> Principal | None:
    """The caller's principal, checked against the scope the route needs (None on exempt routes)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    if path in EXEMPT:
        return None
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("this call needs an API key: send `Authorization: Bearer <key>` (`sift keys create`)")
    cache: KeyCache = request.app.state.keys
    principal = await cache.principal(token)
    if principal is None:
        raise Unauthorized("the API key is not valid (unknown, malformed or revoked); `sift keys list` shows keys")
    needed = scope_for(request.method, path)
    if not principal.allows(needed):
        have = ", ".join(sorted(principal.scopes))
        raise Forbidden(f"{request.method} {path} needs the {needed!r} scope; this key has: {have}")
    request.state.principal = principal
    return principal
