"""Count and time every HTTP request by method, route template and status (plain ASGI, so no
per-request task; the template comes from the route the router matched, never the raw URL)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import metrics

UNMATCHED = "unmatched"  # no route: 404s, and bodies refused before routing (413)


class RequestMetrics:
    """sift_http_requests_total and sift_http_request_duration_seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500 further out

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router records the route it matched in the (shared) scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            metrics.observe_request(scope["method"], route, status, time.perf_counter() - started)
