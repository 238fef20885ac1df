"""A bound on the request line and headers: 431 over SIFT_MAX_HEADER_BYTES or SIFT_MAX_HEADERS.

The HTTP server parses whatever arrives; this refuses a request whose request line and headers
together pass the limit before anything else reads them (authentication, logging, routing)."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.errors import error_body


class HeaderLimit:
    """Plain ASGI middleware: count the bytes of the target and every header, and the headers."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_headers: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + len(scope["method"])
        size += sum(len(name) + len(value) + 4 for name, value in headers)  # ": " and CRLF per header
        if len(headers) > self.max_headers or size > self.max_bytes:
            message = (
                f"request line and headers too large: {len(headers)} headers, {size} bytes; at most "
                f"{self.max_headers} headers (SIFT_MAX_HEADERS) and {self.max_bytes} bytes (SIFT_MAX_HEADER_BYTES)"
            )
            body = error_body(
                "headers_too_large", message, {"max_headers": self.max_headers, "max_bytes": self.max_bytes}
            )
            await JSONResponse(body, status_code=431)(scope, receive, send)
            return
        await self.app(scope, receive, send)
