"""The business filters of feeds and similar items, from request parameters to a vector-store filter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.errors import InvalidInput
from services.vectors.base import Filters


def item_filters(
    *,
    category: Sequence[str] = (),
    language: Sequence[str] = (),
    in_stock: bool | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
    published_after: datetime | None = None,
    published_before: datetime | None = None,
    meta: Sequence[str] = (),
    declared: Mapping[str, str],
) -> Filters:
    """{payload key: condition} for the given parameters; meta holds "key:value" pairs for the
    metadata keys declared in SIFT_ITEM_FILTER_FIELDS."""
    filters: dict[str, Any] = {}
    if category:
        filters["metadata.category"] = list(category)
    if language:
        filters["metadata.language"] = list(language)
    if in_stock is not None:
        filters["metadata.in_stock"] = in_stock
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidInput(f"min_price {min_price:g} is above max_price {max_price:g}")
    price = {k: v for k, v in (("gte", min_price), ("lte", max_price)) if v is not None}
    if price:
        filters["metadata.price"] = price
    published = {k: _iso(v) for k, v in (("gte", published_after), ("lte", published_before)) if v is not None}
    if published:
        filters["published_at"] = published
    for pair in meta:
        key, value = _declared(pair, declared)
        filters.setdefault(f"metadata.{key}", []).append(value)
    return filters


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _declared(pair: str, declared: Mapping[str, str]) -> tuple[str, Any]:
    key, sep, raw = pair.partition(":")
    if not sep or not key:
        raise InvalidInput(f"meta filter {pair!r} must look like key:value")
    kind = declared.get(key)
    if kind is None:
        known = ", ".join(sorted(declared)) or "none yet"
        raise InvalidInput(
            f"metadata key {key!r} is not filterable; declare it in SIFT_ITEM_FILTER_FIELDS (declared: {known})"
        )
    try:
        if kind == "integer":
            return key, int(raw)
        if kind == "bool":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return key, raw.lower() == "true"
    except ValueError:
        raise InvalidInput(f"meta filter {pair!r}: {key} holds {kind} values") from None
    if kind in ("float", "datetime"):
        raise InvalidInput(f"meta filter {pair!r}: {kind} keys take ranges, which meta filters do not express yet")
    return key, raw
