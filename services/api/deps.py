"""Request-scoped dependencies: one session per request, the process runtime, the enqueuer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.enqueue import CoalescingEnqueuer
from services.runtime import Runtime


def get_runtime_dep(request: Request) -> Runtime:
    """The runtime the app was created with."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime_dep)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns."""
    with runtime.db.session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_enqueuer(request: Request) -> CoalescingEnqueuer:
    """The process's coalescing publisher."""
    enqueuer: CoalescingEnqueuer = request.app.state.enqueuer
    return enqueuer


EnqueuerDep = Annotated[CoalescingEnqueuer, Depends(get_enqueuer)]
