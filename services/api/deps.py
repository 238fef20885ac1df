"""Request-scoped dependencies: one session per request, the process runtime, the event writer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.group_writer import GroupWriter
from services.runtime import Runtime

# The largest integer SQLite and PostgreSQL (bigint) hold: integer parameters stay below it, so a
# huge id or offset is a 422, not an overflow in the driver.
SQL_INT_MAX = 2**63 - 1


async def get_runtime_dep(request: Request) -> Runtime:
    """The runtime the app was created with (async: no thread-pool hop for an attribute read)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime_dep)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns."""
    with runtime.db.session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_writer(request: Request) -> GroupWriter:
    """The process's group-commit writer for new events."""
    writer: GroupWriter = request.app.state.writer
    return writer


WriterDep = Annotated[GroupWriter, Depends(get_writer)]
