"""Who may call what: every route but /healthz, /readyz and /metrics needs an API key
(`Authorization: Bearer <key>`) with the scope that ROUTE_SCOPES gives the route, checked by the
Authenticate middleware before the body is read. The key's tenant then picks the runtime every
dependency of the request uses (services/api/deps.py), so a handler cannot reach another tenant's
tables or collections.

A route missing from ROUTE_SCOPES needs admin (tests/unit/test_route_scopes.py keeps the table
complete)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.errors import error_body, status_for
from services.api.rate_limit import EXEMPT, bearer_token
from services.errors import DomainError, Forbidden, Unauthorized
from services.runtime import Runtime
from services.tenancy import tenants
from services.tenancy.tenants import Principal

NO_KEY = "this call needs an API key: send `Authorization: Bearer <key>` (`sift keys create`)"

ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/v1/events"): "ingest",
    ("POST", "/v1/events:reprocess"): "ingest",
    ("POST", "/v1/interactions"): "ingest",
    ("GET", "/v1/events/{event_id}"): "read",
    ("GET", "/v1/events"): "read",
    ("GET", "/v1/whoami"): "read",
    ("GET", "/v1/pipeline"): "read",
    ("GET", "/v1/users"): "read",
    ("GET", "/v1/training/runs"): "read",
    ("GET", "/v1/watchlist/{entity}/sentiment"): "read",
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


class Authenticate:
    """Plain-ASGI middleware: a request for a route of ROUTE_SCOPES is checked before its body is read
    or any handler runs. No key or a bad one is a 401, a key without the route's scope a 403;
    otherwise the principal goes into the request's state for `authorize`. Other paths (the probes,
    the OpenAPI document and /docs, a 404 or 405) pass through."""

    def __init__(self, app: ASGIApp, *, keys: KeyCache, scopes: Mapping[tuple[str, str], str] = ROUTE_SCOPES) -> None:
        self.app = app
        self.keys = keys
        self.routes = [(method, compile_path(path)[0], path) for method, path in scopes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = self._route_path(scope) if scope["type"] == "http" else None
        if path is None:  # a probe, the docs, a 404 or 405 to be; an unlisted route fails in `authorize`
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._check(scope, path)
        except DomainError as exc:  # 401, 403, or 503 when the keys table cannot be read
            status = status_for(exc)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            await JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _route_path(self, scope: Scope) -> str | None:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        requested, root = scope["path"], scope.get("root_path", "")
        if root and requested.startswith(root):  # served under a prefix (--root-path): routes match below it
            requested = requested[len(root) :]
        for route_method, pattern, path in self.routes:
            if route_method == method and pattern.match(requested):
                return path
        return None

    async def _check(self, scope: Scope, path: str) -> Principal:
        token = bearer_token(scope)
        if token is None:
            raise Unauthorized(NO_KEY)
        principal = await self.keys.principal(token)
        if principal is None:
            raise Unauthorized("the API key is not valid (unknown, malformed or revoked); `sift keys list` shows keys")
        method = scope["method"]
        needed = scope_for(method, path)
        if not principal.allows(needed):
            have = ", ".join(sorted(principal.scopes))
            raise Forbidden(f"{method} {path} needs the {needed!r} scope; this key has: {have}")
        return principal


async def authorize(request: Request) -> Principal | None:
    """The caller's principal, as Authenticate checked it (None on the probes). Closed by default:
    an API route reached without one (the middleware missing) is a 401, never the default tenant."""
    route = request.scope.get("route")
    if getattr(route, "path", None) in EXEMPT:
        return None
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized(NO_KEY)
    return principal
