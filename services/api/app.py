"""The FastAPI application factory."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import docs_page, errors, openapi
from services.api.auth import Authenticate, KeyCache, authorize
from services.api.header_limit import HeaderLimit
from services.api.rate_limit import RateLimit, TokenBuckets
from services.api.request_context import RequestContext
from services.api.routers import (
    alerts,
    console,
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
    users,
    webhooks,
)
from services.api.unstorable_text import refuse_unstorable_text
from services.config import QUEUES
from services.enqueue import CoalescingEnqueuer, Enqueuer, make_celery, queue_depths
from services.events.group_writer import GroupWriter
from services.health import Checks, oldest_unfinished_age
from services.metrics import show_tenant_names, watch_backlog, watch_queues
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
        writer = GroupWriter(on_queued=lambda tenant, ids: enqueuer.submit(ids, tenant=tenant))
        app.state.writer = writer
        if warm_model:
            threading.Thread(target=_warm, args=(runtime, app.state.warmed), name="sift-warm", daemon=True).start()
        else:
            app.state.warmed.set()
        yield
        writer.close()
        enqueuer.close()

    app = FastAPI(
        title="Sift",
        version="1",
        lifespan=lifespan,
        description="Text events in; answers, alerts and recommendations out.",
        dependencies=[Depends(authorize), Depends(refuse_unstorable_text)],
        docs_url=None,  # served by docs_page from the installed package, not a CDN
        redoc_url=None,
    )
    docs_page.install(app)
    app.state.runtime = runtime
    app.state.enqueuer_app = producer
    app.state.checks = Checks()  # /readyz: at most one check per dependency in flight
    app.state.warmed = threading.Event()  # /readyz: not ready before the warm-up is done
    errors.install(app)
    openapi.document_errors(app)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    # Outside BodyLimit: a caller without a valid key is refused before a byte of its body is read.
    app.add_middleware(Authenticate, keys=KeyCache(runtime, ttl_s=runtime.settings.key_cache_s))
    if runtime.settings.rate_limit_per_s > 0:  # outside BodyLimit: a client over its rate costs the least
        s = runtime.settings
        buckets = TokenBuckets(
            rate_per_s=s.rate_limit_per_s, burst=s.rate_limit_burst_size, max_keys=s.rate_limit_max_clients
        )
        app.add_middleware(RateLimit, buckets=buckets)
    app.add_middleware(RequestContext)  # 413s, 429s and errors are logged and counted too
    s = runtime.settings
    app.add_middleware(HeaderLimit, max_bytes=s.max_header_bytes, max_headers=s.max_headers)  # outermost
    show_tenant_names(s.metrics_tenant_labels)
    # sift_queue_depth, read from the broker at scrape time the same way as GET /v1/stats
    watch_queues(lambda: {q: n for q, n in queue_depths(producer, QUEUES).items() if n is not None})
    watch_backlog(lambda: oldest_unfinished_age(runtime))
    routers = (health, metrics, events, stats, tasks, labels, training, faqs, match, alerts, webhooks, recommend, drift)
    for module in (*routers, users, console):
        app.include_router(module.router)
    console.mount(app)
    return app


def _warm(runtime: Runtime, warmed: threading.Event) -> None:
    """Load the model, open the store, read the feeds' cache, then freeze: /readyz says ready only
    after this, so a load balancer sends no request to a process that would answer it slowly."""
    try:
        runtime.store  # noqa: B018 - loads the model, then opens the store with its dimension
    except Exception:
        log.exception("could not load the model or open the vector store; /readyz will say why")
        return
    try:
        runtime.recommender.prefill()
    except Exception:  # feeds still work: they read what the cache lacks
        log.exception("could not read the most interacted items into the feeds' cache")
    # What a started process holds (modules, the model: about 650,000 objects) is never garbage:
    # out of the collector's sight, a full collection no longer stops every request for 0.4-0.5 s.
    gc.freeze()
    warmed.set()


class BodyLimit:
    """Refuse a body over max_bytes with 413: before it is read when Content-Length says so, else
    (a chunked body) as soon as the bytes received pass the limit (plain ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = (
            f"request body over {max_bytes} bytes (SIFT_MAX_BODY_BYTES); send a smaller body, "
            "e.g. split a batch into several requests"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse(errors.error_body("body_too_large", self.message), status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # read inside the route: answered by the HTTPException handler
                raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, counted, send)
