"""Request-scoped dependencies: one session per request, the process runtime, the event writer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.api.auth import authorize
from services.events.group_writer import GroupWriter
from services.runtime import Runtime
from services.tenancy.tenants import Principal

# The largest integer SQLite and PostgreSQL (bigint) hold: integer parameters stay below it, so a
# huge id or offset is a 422, not an overflow in the driver.
SQL_INT_MAX = 2**63 - 1


async def get_root_runtime(request: Request) -> Runtime:
    """The runtime the app was created with: for the routes no key is needed for (health)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RootRuntimeDep = Annotated[Runtime, Depends(get_root_runtime)]


async def get_runtime_dep(request: Request, principal: Annotated[Principal | None, Depends(authorize)]) -> Runtime:
    """The runtime of the caller's tenant: its sessions, collections and models only."""
    if principal is None:
        raise RuntimeError(f"{request.url.path} needs no key, so it has no tenant: use RootRuntimeDep")
    runtime: Runtime = request.app.state.runtime
    return runtime.for_tenant(principal.tenant)


RuntimeDep = Annotated[Runtime, Depends(get_runtime_dep)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns."""
    # FastAPI enters and leaves this in whichever pool threads are free: a pool thread may take the
    # next request's session while this one is open, so the nested-scope guard does not apply.
    with runtime.db.session_scope(guard=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_writer(request: Request) -> GroupWriter:
    """The process's group-commit writer for new events."""
    writer: GroupWriter = request.app.state.writer
    return writer


WriterDep = Annotated[GroupWriter, Depends(get_writer)]
