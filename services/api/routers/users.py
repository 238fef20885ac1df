"""GET /v1/users: the users who interacted lately (to pick one whose feed to look at)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.api.deps import SessionDep
from services.db import browse
from services.db.models import as_utc

router = APIRouter(prefix="/v1", tags=["recommend"])


class UserOut(BaseModel):
    """A user and their recent activity."""

    user_id: str
    interactions: int
    last_ts: datetime


class UserList(BaseModel):
    """Users of the latest interactions, most recently active first."""

    users: list[UserOut]


@router.get("/users", response_model=UserList)
def list_users(session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> UserList:
    """Users who interacted lately, with how many of the latest interactions are theirs."""
    rows = browse.active_users(session, limit=limit)
    return UserList(
        users=[UserOut(user_id=u.user_id, interactions=u.interactions, last_ts=as_utc(u.last_ts)) for u in rows]
    )
