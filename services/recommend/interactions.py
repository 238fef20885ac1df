"""Interactions: what users did with items. Writing one also keeps the two aggregates a feed reads
instead of scanning everyone's history: each item's popularity (item_stats) and how often the same
user took two items close together (item_pairs, the co-interaction neighbours).

A write pairs each new positive interaction with the user's `pair_window` latest items only, so
its cost is bounded whatever the history; the interaction's id makes a retry write nothing new.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Integer, Table, bindparam, delete, event, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.db.models import Event, Interaction, ItemPair, ItemStats, as_utc
from services.errors import InvalidInput, NotFound
from services.memo import Listeners
from services.timestamps import Timestamp

ITEM_KINDS: tuple[str, ...] = ("product", "news")
POSITIVE_TYPES: tuple[str, ...] = ("view", "click", "purchase", "like")
TYPES: tuple[str, ...] = (*POSITIVE_TYPES, "dismiss")
_NAMESPACE = uuid.UUID("6f1d3c2a-3c52-4e8e-9d7e-2f0b7f6a9c11")
_TOUCHED = "sift_recorded_items"  # session.info key: the items whose aggregates this transaction changed
_recorded_listeners: Listeners[[str, set[str]]] = Listeners()


class InteractionIn(BaseModel):
    """One interaction; give `id` or `ts` so that a retried request is recognised."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    type: str = Field(description="view, click, purchase, like or dismiss")
    ts: Timestamp | None = Field(None, description="when it happened (default: now)")
    id: str | None = Field(None, min_length=1, max_length=64, description="the client's id for this interaction")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TYPES:
            raise ValueError(f"type must be one of {', '.join(TYPES)}")
        return value

    @field_validator("user_id", "item_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError("must not be blank or contain a NUL character")
        return value


@dataclass(frozen=True)
class Recorded:
    """What a request wrote: the interaction ids in request order, and how many were new."""

    ids: list[str]
    new: int


@dataclass(frozen=True)
class Touch:
    """One interaction of a user's history, newest first."""

    item_id: str
    kind: str
    type: str
    ts: datetime


# Built once: a request reads one user's latest rows per user it touches, and building the
# statement cost more than running it (about 0.7 ms against 0.2 ms on SQLite).
_NEWEST_FIRST = (Interaction.ts.desc(), Interaction.created_at.desc(), Interaction.id)
_LATEST_POSITIVES = (
    select(Interaction.id, Interaction.item_id)
    .where(Interaction.user_id == bindparam("user_id"), Interaction.type.in_(POSITIVE_TYPES))
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("n", type_=Integer))
)
_HISTORY = (
    select(Interaction.item_id, Interaction.kind, Interaction.type, Interaction.ts)
    .where(Interaction.user_id == bindparam("user_id"))
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("n", type_=Integer))
)


def record(
    session: Session,
    *,
    interactions: Sequence[InteractionIn],
    now: datetime,
    pair_window: int,
    max_per_request: int,
) -> Recorded:
    """Store interactions and update popularity and co-interaction pairs for the new ones; an
    unknown item refuses the whole request (nothing written)."""
    if not interactions:
        raise InvalidInput("send at least one interaction")
    if len(interactions) > max_per_request:
        raise InvalidInput(f"{len(interactions)} interactions in one request; send at most {max_per_request}")
    kinds = item_kinds(session, ids=sorted({i.item_id for i in interactions}))  # raises before any write
    # created_at is the arrival order (microseconds apart): it orders interactions that share a ts.
    rows = [_row(i, kinds[i.item_id], now + timedelta(microseconds=n)) for n, i in enumerate(interactions)]
    new_ids = set(_insert_new(session, rows))
    new_rows = [row for row in rows if row["id"] in new_ids]
    positives = sorted((r for r in new_rows if r["type"] in POSITIVE_TYPES), key=lambda r: (r["user_id"], r["ts"]))
    _count_popularity(session, positives)
    touched = _count_pairs(session, positives, window=pair_window)
    _tell_after_commit(session, touched | {row["item_id"] for row in positives})
    return Recorded(ids=[row["id"] for row in rows], new=len(new_ids))


def on_recorded(listener: Callable[[str, set[str]], None]) -> None:
    """Call the bound method listener(tenant, item_ids) after each commit of a transaction that
    changed the popularity or co-interaction pairs of those items (in this process)."""
    _recorded_listeners.add(listener)


def _tell_after_commit(session: Session, items: Iterable[str]) -> None:
    pending: set[str] | None = session.info.get(_TOUCHED)
    if pending is None:
        pending = session.info[_TOUCHED] = set()
        event.listen(session, "after_commit", _committed)
        event.listen(session, "after_rollback", lambda s: s.info.get(_TOUCHED, set()).clear())
    pending.update(items)


def _committed(session: Session) -> None:
    items = set(session.info.get(_TOUCHED, ()))
    session.info.get(_TOUCHED, set()).clear()
    if not items:
        return
    tenant = str(session.info.get("tenant", ""))
    _recorded_listeners.tell(tenant, items)


def item_kinds(session: Session, *, ids: Sequence[str]) -> dict[str, str]:
    """The kind of each item id; NotFound names unknown ids, InvalidInput ids of other events."""
    found = {row.id: row.kind for row in session.execute(select(Event.id, Event.kind).where(Event.id.in_(ids)))}
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise NotFound(
            f"{len(unknown)} unknown item id(s): items are product or news events, sent with POST /v1/events first",
            details={"unknown_item_ids": unknown[:50]},
        )
    wrong = sorted(i for i, kind in found.items() if kind not in ITEM_KINDS)
    if wrong:
        raise InvalidInput(
            f"{len(wrong)} id(s) are events that are not items (only {' and '.join(ITEM_KINDS)} events are)",
            details={"not_items": wrong[:50]},
        )
    return found


def _row(interaction: InteractionIn, kind: str, now: datetime) -> dict[str, Any]:
    ts = as_utc(interaction.ts) if interaction.ts else now
    natural = "\x1f".join((interaction.user_id, interaction.item_id, interaction.type, ts.isoformat()))
    key = interaction.id or str(uuid.uuid5(_NAMESPACE, natural))
    return {
        "id": key,
        "user_id": interaction.user_id,
        "item_id": interaction.item_id,
        "kind": kind,
        "type": interaction.type,
        "ts": ts,
        "created_at": now,
    }


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    unique = list({row["id"]: row for row in rows}.values())
    stmt = _insert(session)(cast(Table, Interaction.__table__)).on_conflict_do_nothing(index_elements=["id"])
    return [row[0] for row in session.execute(stmt.returning(Interaction.id), unique)]


def _count_popularity(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    counts: dict[str, list[Any]] = {}
    for row in rows:
        entry = counts.setdefault(row["item_id"], [row["kind"], 0.0, row["ts"]])
        entry[1] += 1.0
        entry[2] = max(entry[2], row["ts"])
    if counts:
        session.execute(_add_popularity(session.get_bind().dialect.name), _sorted_rows(counts))


def _sorted_rows(counts: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [{"item_id": k, "kind": v[0], "positives": v[1], "last_ts": v[2]} for k, v in sorted(counts.items())]


@lru_cache(maxsize=4)
def _add_popularity(dialect: str) -> Any:
    table = cast(Table, ItemStats.__table__)
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=["item_id"],
        set_={
            "positives": table.c.positives + stmt.excluded.positives,
            "last_ts": stmt.excluded.last_ts,  # rows arrive sorted by time within a batch
        },
    )


def _count_pairs(session: Session, rows: Sequence[dict[str, Any]], *, window: int) -> set[str]:
    """Pair each new positive interaction with the user's latest distinct items before it; returns
    the items whose pairs changed."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_user[row["user_id"]].append(row)
    weights: dict[tuple[str, str], float] = defaultdict(float)
    for user_id, new in by_user.items():
        recent = _latest_items(session, user_id=user_id, exclude={row["id"] for row in new}, limit=window)
        for row in new:
            item = row["item_id"]
            for other in recent:
                if other != item:
                    weights[(item, other)] += 1.0
                    weights[(other, item)] += 1.0
            recent = [item, *(o for o in recent if o != item)][:window]
    if weights:
        params = [{"item_id": a, "other_id": b, "weight": w} for (a, b), w in sorted(weights.items())]
        session.execute(_add_pairs(session.get_bind().dialect.name), params)
    return {item for pair in weights for item in pair}


def _latest_items(session: Session, *, user_id: str, exclude: set[str], limit: int) -> list[str]:
    """The user's latest distinct positive items, newest first, leaving out this request's rows."""
    params = {"user_id": user_id, "n": limit + len(exclude)}
    items = [row.item_id for row in session.execute(_LATEST_POSITIVES, params) if row.id not in exclude]
    return list(dict.fromkeys(items))[:limit]


@lru_cache(maxsize=4)
def _add_pairs(dialect: str) -> Any:
    table = cast(Table, ItemPair.__table__)
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=["item_id", "other_id"], set_={"weight": table.c.weight + stmt.excluded.weight}
    )


def history(session: Session, *, user_id: str, limit: int) -> list[Touch]:
    """The user's latest interactions, newest first: at most limit rows, however long the history."""
    rows = session.execute(_HISTORY, {"user_id": user_id, "n": limit}).all()
    return [Touch(r.item_id, r.kind, r.type, as_utc(r.ts)) for r in rows]


def forget_item(session: Session, *, item_id: str) -> None:
    """Drop an item's aggregates (its popularity and every pair it is in); interactions stay as history."""
    session.execute(delete(ItemStats).where(ItemStats.item_id == item_id))
    session.execute(delete(ItemPair).where(or_(ItemPair.item_id == item_id, ItemPair.other_id == item_id)))
