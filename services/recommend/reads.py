"""The SQL reads of a feed: co-interaction neighbours and pairs, trending, newest and popularity
(services/recommend/feeds.py puts them together; each is one statement)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, select, union_all
from sqlalchemy.orm import Session

from services.config import Settings
from services.db.models import Event, Interaction, ItemPair, ItemStats
from services.recommend import interactions

PAIR_PARTS = 20  # SIFT_RECOMMEND_PROFILE_ITEMS' default


def neighbour_pairs(session: Session, item_ids: Sequence[str], *, per_item: int) -> dict[tuple[str, str], float]:
    """(neighbour, item) → weight for the strongest `per_item` pairs of each item: one statement of
    index range reads (pairs are stored both ways, so the weight is also pairs(neighbour, item))."""
    if not item_ids:
        return {}
    parts = max(len(item_ids), PAIR_PARTS)  # padded with "" (matches nothing): one statement to build
    params: dict[str, Any] = {f"item_{n}": "" for n in range(parts)}
    params.update({f"item_{n}": item_id for n, item_id in enumerate(item_ids)})
    rows = session.execute(_neighbour_statement(parts, per_item), params).tuples().all()  # one fetch, not one a row
    return {(other, item_id): float(weight) for item_id, other, weight in rows}


@lru_cache(maxsize=8)
def _neighbour_statement(parts: int, per_item: int) -> Any:
    """UNION ALL of `parts` index range reads, built once per process (building it costs ~8 ms)."""
    return union_all(
        *[
            select(ItemPair.item_id, ItemPair.other_id, ItemPair.weight)
            .where(ItemPair.item_id == bindparam(f"item_{n}"))
            .order_by(ItemPair.weight.desc(), ItemPair.other_id.desc())
            .limit(per_item)
            .subquery()
            .select()
            for n in range(parts)
        ]
    )


def trending(session: Session, kind: str, settings: Settings) -> dict[str, float]:
    """Items with the most positive interactions in the trending window (else of all time), with
    their counts, most first."""
    since = datetime.now(UTC) - timedelta(seconds=settings.recommend_trending_window_s)
    count = func.count().label("n")
    stmt = (
        select(Interaction.item_id, count)
        .where(Interaction.ts >= since, Interaction.kind == kind, Interaction.type.in_(interactions.POSITIVE_TYPES))
        .group_by(Interaction.item_id)
        .order_by(count.desc(), Interaction.item_id)
        .limit(settings.recommend_candidates)
    )
    recent = {row.item_id: float(row.n) for row in session.execute(stmt)}
    return recent or most_interacted(session, kind, settings.recommend_candidates)


def most_interacted(session: Session, kind: str, limit: int) -> dict[str, float]:
    """The items of a kind with the most positive interactions of all time, with their counts, most first."""
    stmt = (
        select(ItemStats.item_id, ItemStats.positives)
        .where(ItemStats.kind == kind)
        .order_by(ItemStats.positives.desc(), ItemStats.item_id)
        .limit(limit)
    )
    return {row.item_id: float(row.positives) for row in session.execute(stmt)}


def max_popularity(session: Session) -> float:
    return float(session.scalar(select(func.max(ItemStats.positives))) or 1.0)


def newest(session: Session, kind: str, limit: int) -> list[str]:
    """The latest processed items of a kind (new items are recommendable before anyone touched them)."""
    stmt = (
        select(Event.id)
        .where(Event.kind == kind, Event.status == "done")
        .order_by(Event.processed_at.desc(), Event.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


# Built once: IN (:ids) expands at execution, where .in_(values) coerced each of 200 values per feed.
_POPULARITY = select(ItemStats.item_id, ItemStats.positives).where(
    ItemStats.item_id.in_(bindparam("ids", expanding=True))
)
_PAIRS = select(ItemPair.item_id, ItemPair.other_id, ItemPair.weight).where(
    ItemPair.item_id.in_(bindparam("items", expanding=True)), ItemPair.other_id.in_(bindparam("others", expanding=True))
)


def popularity(session: Session, ids: Sequence[str]) -> dict[str, float]:
    if not ids:
        return {}
    rows = session.execute(_POPULARITY, {"ids": list(set(ids))}).tuples().all()
    return {item_id: float(positives) for item_id, positives in rows}


def pairs(session: Session, candidates: Sequence[str], profile_items: Sequence[str]) -> dict[tuple[str, str], float]:
    if not candidates or not profile_items:
        return {}
    params = {"items": list(set(candidates)), "others": list(set(profile_items))}
    return {
        (item_id, other): float(weight) for item_id, other, weight in session.execute(_PAIRS, params).tuples().all()
    }
