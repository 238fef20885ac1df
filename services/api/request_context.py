"""One plain-ASGI middleware around every request: a request id on every log line it writes (the
caller's `X-Request-ID` when it sends a sane one, else a new id; echoed in the response), the
request logged once answered (probes and scrapes only at DEBUG), and its metrics
(sift_http_requests_total, sift_http_request_duration_seconds, labelled by route template)."""

from __future__ import annotations

import logging
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import logs, metrics

log = logging.getLogger("services.api.requests")

HEADER = "x-request-id"
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED = "unmatched"  # no route: 404s, and bodies refused before routing (413)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContext:
    """Binds request_id for the request's log lines, returns it as X-Request-ID, logs and counts the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER.encode(), b"").decode("latin-1")
        request_id = given if _SANE.fullmatch(given) else logs.new_id()
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500 further out

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        with logs.bound(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                # The router records the route it matched in the (shared) scope.
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                metrics.observe_request(scope["method"], route, status, elapsed)
                level = logging.DEBUG if scope["path"] in QUIET else logging.INFO
                ms = round(1000 * elapsed, 1)
                log.log(level, "%s %s %d", scope["method"], scope["path"], status, extra={"status": status, "ms": ms})
