"""Sift's collections: one per event kind, with payload indexes on what services filter on."""

from __future__ import annotations

from collections.abc import Mapping

from services.config import EVENT_KINDS
from services.vectors.base import PayloadIndex, VectorStore

# Created before any upload, so filtered search never falls back to a scan (qdrant-client #408).
PAYLOAD_INDEXES: tuple[PayloadIndex, ...] = (
    PayloadIndex("event_id", "keyword"),
    PayloadIndex("kind", "keyword"),
    PayloadIndex("entities", "keyword"),
    PayloadIndex("model_version", "keyword"),
    PayloadIndex("occurred_at", "datetime"),
    PayloadIndex("received_at", "datetime"),
    PayloadIndex("metadata.category", "keyword"),
    PayloadIndex("metadata.language", "keyword"),
    PayloadIndex("metadata.tags", "keyword"),
    PayloadIndex("metadata.locale", "keyword"),
    PayloadIndex("metadata.in_stock", "bool"),
    PayloadIndex("metadata.price", "float"),
    PayloadIndex("published_at", "datetime"),
)


def payload_indexes(item_filter_fields: Mapping[str, str]) -> tuple[PayloadIndex, ...]:
    """The fixed indexes plus one per metadata key that producers declared filterable."""
    fixed = {index.field for index in PAYLOAD_INDEXES}
    extra = [PayloadIndex(f"metadata.{key}", kind) for key, kind in sorted(item_filter_fields.items())]
    return PAYLOAD_INDEXES + tuple(index for index in extra if index.field not in fixed)


def collection_for(kind: str, *, prefix: str) -> str:
    """The collection that holds events of kind."""
    return f"{prefix}{kind}"


def ensure_collections(
    store: VectorStore, *, prefix: str, dimension: int, item_filter_fields: Mapping[str, str] | None = None
) -> None:
    """Create every kind's collection and its payload indexes (idempotent)."""
    indexes = payload_indexes(item_filter_fields or {})
    for kind in EVENT_KINDS:
        store.ensure_collection(collection_for(kind, prefix=prefix), dimension=dimension, indexes=indexes)
