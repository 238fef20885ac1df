"""GET /metrics: this process's Prometheus metrics (the worker's too under `sift up`)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from services import metrics
from services.api.deps import RootRuntimeDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
def prometheus_metrics(request: Request, runtime: RootRuntimeDep) -> Response:
    """The Prometheus text format; queue depths are read from the broker now (sync: off the event loop).
    With SIFT_METRICS_TOKEN set, only a scraper that sends it as a bearer token gets them."""
    token = runtime.settings.metrics_token
    if token is not None and token.get_secret_value():
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token.get_secret_value()}".encode()):
            raise HTTPException(
                status_code=401,
                detail="/metrics needs the token of SIFT_METRICS_TOKEN: send `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
    body, content_type = metrics.render()
    return Response(content=body, media_type=content_type)
