"""GET /healthz (the process lives) and GET /readyz (its dependencies answer)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.api.deps import RootRuntimeDep
from services.enqueue import ping
from services.health import Checks, readiness_checks, verdict

router = APIRouter(tags=["health"])

# What the checks may take, leaving the rest of the second to the request and the answer.
READY_WITHIN_S = 0.8


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers as long as the event loop runs (async: no worker thread needed)."""
    return {"status": "ok"}


class Readiness(BaseModel):
    """Whether this process can serve, and each dependency's answer ("ok" or what is wrong)."""

    status: Literal["ready", "degraded", "not ready"] = Field(
        description="degraded (still 200): only backlog or vector writes fail; the process serves, its work is stuck"
    )
    checks: dict[str, str] = Field(
        description="database, broker, vectors, model, backlog, vector writes: 'ok' or the problem"
    )


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "A dependency does not answer (yet); checks says which."}
}


@router.get("/readyz", response_model=Readiness, responses=NOT_READY)
async def readyz(request: Request, runtime: RootRuntimeDep) -> JSONResponse:
    """Readiness: database, broker, vector store reachable and the model loaded and warmed up, within 1 s."""
    broker = request.app.state.enqueuer_app
    checks: Checks = request.app.state.checks
    ping_broker, warmed = lambda: ping(broker, timeout_s=1.0), request.app.state.warmed.is_set
    futures = checks.start(readiness_checks(runtime=runtime, ping_broker=ping_broker, warmed=warmed))
    # Awaited on the event loop, not in the request thread pool: requests stuck on a hung
    # database can fill that pool, and the probe must still answer.
    waiting = [asyncio.wrap_future(f) for f in futures.values()]
    await asyncio.wait(waiting, timeout=READY_WITHIN_S)
    for w in waiting:  # wake-ups only (outcomes come from the futures), so settle every one
        if not w.done():
            w.cancel()
        elif not w.cancelled():
            w.exception()  # retrieved: else asyncio logs "Future exception was never retrieved"
    results = checks.outcomes(futures)
    status = verdict(results)
    return JSONResponse({"status": status, "checks": results}, status_code=503 if status == "not ready" else 200)
