"""A request id on every log line a request writes (plain ASGI, like the other middlewares): the
caller's `X-Request-ID` when it sends a sane one, else a new id; echoed in the response, and the
request itself logged once answered (probes and scrapes only at DEBUG)."""

from __future__ import annotations

import logging
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import logs

log = logging.getLogger("services.api.requests")

HEADER = "x-request-id"
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContext:
    """Binds request_id for the request's log lines and returns it as X-Request-ID."""

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
                level = logging.DEBUG if scope["path"] in QUIET else logging.INFO
                ms = round(1000 * (time.perf_counter() - started), 1)
                log.log(level, "%s %s %d", scope["method"], scope["path"], status, extra={"status": status, "ms": ms})
