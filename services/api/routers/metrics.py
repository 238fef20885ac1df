"""GET /metrics: this process's Prometheus metrics (the worker's too under `sift up`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from services import metrics

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
def prometheus_metrics() -> Response:
    """The Prometheus text format; queue depths are read from the broker now (sync: off the event loop)."""
    body, content_type = metrics.render()
    return Response(content=body, media_type=content_type)
