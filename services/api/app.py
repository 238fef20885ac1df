"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api import errors
from services.api.request_context import RequestContext
from services.api.routers import (
    alerts,
    drift,
    events,
    faqs,
    health,
    labels,
    match,
    metrics,
    recommend,
    stats,
    tasks,
    training,
    webhooks,
)
from services.config import QUEUES
from services.enqueue import CoalescingEnqueuer, Enqueuer, make_celery, queue_depths
from services.group_writer import GroupWriter
from services.health import Checks
from services.metrics import watch_queues
from services.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)


def create_app(runtime: Runtime | None = None, *, warm_model: bool = True) -> FastAPI:
    """The API over runtime (default: this process's); loads the model in the background."""
    runtime = runtime or get_runtime()
    producer = make_celery(runtime.settings, name="sift-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        enqueuer = CoalescingEnqueuer(
            Enqueuer(producer, batch_size=runtime.settings.batch_size), wait_ms=runtime.settings.batch_wait_ms
        )
        writer = GroupWriter(runtime.db, on_queued=enqueuer.submit)
        app.state.writer = writer
        if warm_model:
            threading.Thread(target=_warm, args=(runtime,), name="sift-warm", daemon=True).start()
        yield
        writer.close()
        enqueuer.close()

    app = FastAPI(
        title="Sift",
        version="1",
        lifespan=lifespan,
        description="Text events in; answers, alerts and recommendations out.",
    )
    app.state.runtime = runtime
    app.state.enqueuer_app = producer
    app.state.checks = Checks()  # /readyz: at most one check per dependency in flight
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outermost: 413s and errors are logged and counted too
    # sift_queue_depth, read from the broker at scrape time the same way as GET /v1/stats
    watch_queues(lambda: {q: n for q, n in queue_depths(producer, QUEUES).items() if n is not None})
    routers = (health, metrics, events, stats, tasks, labels, training, faqs, match, alerts, webhooks, recommend, drift)
    for module in routers:
        app.include_router(module.router)
    return app


def _warm(runtime: Runtime) -> None:
    try:
        runtime.store  # noqa: B018 - loads the model, then opens the store with its dimension
    except Exception:
        log.exception("could not load the model or open the vector store; /readyz will say why")


class BodyLimit:
    """Refuse a body over max_bytes with 413 before it is read (plain ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                message = f"request body over {self.max_bytes} bytes; send fewer or smaller events"
                response = JSONResponse(errors.error_body("body_too_large", message), status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
