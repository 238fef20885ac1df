"""GET /healthz (the process lives) and GET /readyz (its dependencies answer)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.deps import RuntimeDep
from services.health import run_checks

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Readiness: database, broker, vector store reachable and the model loaded, within 1 s."""
    broker = request.app.state.enqueuer_app

    def model() -> None:
        if not runtime.model_loaded():
            raise RuntimeError("model still loading")

    def broker_check() -> None:
        with broker.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)

    checks = {"database": runtime.db.ping, "broker": broker_check, "model": model}
    if runtime.model_loaded():  # the store needs the model's dimension to create collections
        checks["vectors"] = lambda: runtime.store.ping()
    results = run_checks(checks, timeout_s=1.0)
    results.setdefault("vectors", "waiting for the model")
    ready = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": results}, status_code=200 if ready else 503
    )
