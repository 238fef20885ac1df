"""The web console and the two calls made for it: GET /v1/whoami (who the key is) and GET
/v1/pipeline (one snapshot of the work, polled by the open Pipeline page).

The console itself is static files (services/api/console/: HTML, one script, one style sheet, no
build step, nothing fetched from elsewhere) served at /console without a key; every figure it
shows comes from the public API, called with the key the person signed in with, so the API's
scopes and tenants apply to it as to any client."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services import metrics
from services.api.auth import authorize
from services.api.deps import SessionDep
from services.config import QUEUES
from services.db import events as repo
from services.enqueue import queue_depths
from services.tenancy.tenants import Principal
from services.training import registry

router = APIRouter(prefix="/v1", tags=["console"])
ASSETS = Path(__file__).resolve().parent.parent / "console"
# Nothing but this origin: the page can neither load nor send anything elsewhere.
POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class WhoAmI(BaseModel):
    """The caller's tenant, key id (None for a SIFT_API_KEYS key) and scopes."""

    tenant: str
    key_id: str | None
    scopes: list[str]


class Serving(BaseModel):
    """A classification task's model as served (by this process) or active (in the registry)."""

    task: str
    kind: str
    version: str
    encoder: str


class Totals(BaseModel):
    """Observations of a process histogram and the sum of the observed values."""

    count: float
    sum: float


class Pipeline(BaseModel):
    """A snapshot of the tenant's pipeline; rates come from two snapshots' differences."""

    at: datetime
    events: dict[str, dict[str, int]] = Field(description="the tenant's events by kind and status")
    finished: int = Field(description="the tenant's events done or failed, all time")
    processed_last_minute: int
    queues: dict[str, int | None] = Field(description="messages waiting in each broker queue (all tenants)")
    batches: Totals = Field(description="batches this process ran (all tenants): count, events in them")
    encode: Totals = Field(description="encode calls in this process (all tenants): count, seconds")
    serving: list[Serving] = Field(description="the models this process serves the tenant with")
    active: list[Serving] = Field(description="the versions active in the tenant's registry")


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Annotated[Principal | None, Depends(authorize)]) -> WhoAmI:
    """The tenant and scopes of the key that calls: what a client (the console) may show and do."""
    assert principal is not None  # the route needs a key (ROUTE_SCOPES)
    return WhoAmI(tenant=principal.tenant, key_id=principal.key_id, scopes=sorted(principal.scopes))


@router.get("/pipeline", response_model=Pipeline)
def pipeline(
    request: Request, session: SessionDep, principal: Annotated[Principal | None, Depends(authorize)]
) -> Pipeline:
    """Counts, queue depths, batch and encode totals and the models serving, in one call."""
    assert principal is not None
    now = datetime.now(UTC)
    counts = repo.counts(session)
    finished = sum(n for by_status in counts.values() for s, n in by_status.items() if s in ("done", "failed"))
    active = [v for v in registry.list_versions(session) if v.status == "active"]
    return Pipeline(
        at=now,
        events=counts,
        finished=finished,
        processed_last_minute=repo.processed_since(session, since=repo.window(now, 60)),
        queues=queue_depths(request.app.state.enqueuer_app, QUEUES),
        batches=Totals(**dict(zip(("count", "sum"), metrics.histogram_totals(metrics.BATCH_SIZE), strict=True))),
        encode=Totals(**dict(zip(("count", "sum"), metrics.histogram_totals(metrics.ENCODE_DURATION), strict=True))),
        serving=[
            Serving(task=t, kind=k, version=v, encoder=e) for t, k, v, e in metrics.served_models(principal.tenant)
        ],
        active=[Serving(task=v.task, kind=v.kind, version=v.version, encoder=v.encoder_version) for v in active],
    )


class ConsoleFiles(StaticFiles):
    """The console's files, each answered with a policy that keeps the page on this origin."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_policy(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))  # type: ignore[call-overload]
                headers += [(b"content-security-policy", POLICY.encode()), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_policy)  # type: ignore[arg-type]


def mount(app: FastAPI) -> None:
    """Serve the console at /console/ (a plain mount: no key is needed to load the page itself)."""
    app.mount("/console", ConsoleFiles(directory=ASSETS, html=True), name="console")
