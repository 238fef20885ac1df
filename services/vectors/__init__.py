"""The VectorStore port and its two adapters: Qdrant Edge (embedded) and Qdrant server."""

from __future__ import annotations

from pathlib import Path

from services.vectors.base import Filters, Hit, PayloadIndex, VectorPoint, VectorStore

__all__ = ["Filters", "Hit", "PayloadIndex", "VectorPoint", "VectorStore", "open_store"]


def open_store(
    *, qdrant_url: str | None, qdrant_api_key: str | None, vectors_dir: Path, lock_file: Path | None = None
) -> VectorStore:
    """Qdrant Edge under vectors_dir when no URL is set, else a Qdrant server at qdrant_url.

    The embedded store is opened only under an exclusive lock (lock_file, by default open.lock in
    vectors_dir) that one process at a time holds: OwnedElsewhere names the process holding it."""
    if not qdrant_url:
        from services.vectors.owner import store_lock_file
        from services.vectors.qdrant_edge import QdrantEdgeStore

        vectors_dir.mkdir(parents=True, exist_ok=True)
        return QdrantEdgeStore(vectors_dir, lock_file=lock_file or store_lock_file(vectors_dir))
    from services.vectors.qdrant_server import QdrantServerStore

    return QdrantServerStore.connect(qdrant_url, qdrant_api_key)
