"""Reading one row by key, or a NotFound that says what was missing."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import Session

from services.errors import NotFound

T = TypeVar("T")


def require(session: Session, model: type[T], key: Any, *, missing: str) -> T:
    """The row of model with this primary key; NotFound(missing) when there is none."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(missing)
    return row
