"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from services.api import errors
from services.api.routers import events, health, stats
from services.enqueue import CoalescingEnqueuer, Enqueuer, make_celery
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
        app.state.enqueuer = enqueuer
        if warm_model:
            threading.Thread(target=_warm, args=(runtime,), name="sift-warm", daemon=True).start()
        yield
        enqueuer.close()

    app = FastAPI(
        title="Sift",
        version="1",
        lifespan=lifespan,
        description="Text events in; answers, alerts and recommendations out.",
    )
    app.state.runtime = runtime
    app.state.enqueuer_app = producer
    errors.install(app)
    app.middleware("http")(_limit_body(runtime.settings.max_body_bytes))
    for router in (health.router, events.router, stats.router):
        app.include_router(router)
    return app


def _warm(runtime: Runtime) -> None:
    try:
        runtime.store  # noqa: B018 - loads the model, then opens the store with its dimension
    except Exception:
        log.exception("could not load the model or open the vector store; /readyz will say why")


def _limit_body(max_bytes: int) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def limit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            body = errors.error_body(
                "body_too_large", f"request body over {max_bytes} bytes; send fewer or smaller events"
            )
            return JSONResponse(body, status_code=413)
        return await call_next(request)

    return limit
