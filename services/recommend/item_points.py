"""Items' unit vectors and payloads, kept in this process by (collection, point id).

A feed asks the vector store for ids and scores only (membership, filters and ranking stay the
store's) and reads each hit's vector and payload here; the misses of a call are one retrieve by id.
Handing 100 hits' vectors and payloads from Qdrant Edge to Python cost about 2 ms a query, three
queries a feed. A point changes under its id only when its item is sent again with another text
or metadata, or deleted (a new encoder writes a new collection). This process forgets such an
item at once: the worker's batch tells it (events.batch.on_done) and Recommender.delete_item
forgets what it deletes; a process that runs no worker serves the old entry for at most
ENTRY_TTL_S. At most CAPACITY entries (about 2 KB each at 384 dimensions): the least recently
used go first. An entry keeps only the payload keys feeds read (PAYLOAD_KEYS, str values), as
one flat tuple of strings, a float and bytes (the vector's), which Python's garbage collector does
not track (a tuple holding a dict or an ndarray stays tracked): a cache of
100,000 payload dicts made each full collection traverse half a million more objects.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.vectors.base import VectorStore

CAPACITY = 200_000
ENTRY_TTL_S = 120.0
PAYLOAD_KEYS = ("event_id", "title", "text", "published_at")
_TEXT_CHARS = 200  # of the text, enough for a title (feeds show 60)


@dataclass(frozen=True)
class ItemPoint:
    """A stored item: its id, unit vector (float32, read-only) and payload (PAYLOAD_KEYS only)."""

    item_id: str
    vector: np.ndarray
    payload: dict[str, str]


class ItemPoints:
    """The cache: `get` answers from memory and retrieves what it lacks in one call."""

    def __init__(self, store: VectorStore, *, capacity: int = CAPACITY, ttl_s: float = ENTRY_TTL_S) -> None:
        self.store = store
        self.capacity = capacity
        self.ttl_s = ttl_s
        # (collection, point id) -> (when fetched, float32 vector as bytes, *the PAYLOAD_KEYS' values or "")
        self._entries: OrderedDict[tuple[str, str], tuple[Any, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._forgotten = 0  # counts forget calls: a fetch that overlapped one keeps nothing

    def get(self, collection: str, point_ids: Sequence[str]) -> dict[str, ItemPoint]:
        """The points of point_ids that exist, by point id."""
        found: dict[str, ItemPoint] = {}
        missing: list[str] = []
        now = time.monotonic()
        with self._lock:
            epoch = self._forgotten
            for pid in dict.fromkeys(point_ids):
                entry = self._entries.get((collection, pid))
                if entry is not None and now - entry[0] < self.ttl_s:
                    self._entries.move_to_end((collection, pid))
                    found[pid] = _point(entry)
                else:
                    missing.append(pid)
        if missing:
            fetched = self._fetch(collection, missing)
            found.update(fetched)
            self._keep(collection, fetched, now, epoch)
        return found

    def forget(self, collection: str, point_ids: Sequence[str]) -> None:
        """Drop these points (their item changed or was deleted)."""
        with self._lock:
            self._forgotten += 1
            for pid in point_ids:
                self._entries.pop((collection, pid), None)

    def __len__(self) -> int:
        return len(self._entries)

    def _fetch(self, collection: str, point_ids: Sequence[str]) -> dict[str, ItemPoint]:
        hits = [h for h in self.store.retrieve(collection, point_ids, with_vectors=True) if h.vector is not None]
        if not hits:
            return {}
        rows = np.asarray([h.vector for h in hits], dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows /= np.where(norms > 0, norms, 1.0)
        points = {}
        for k, h in enumerate(hits):
            item_id = str(h.payload.get("event_id", h.id))
            points[h.id] = ItemPoint(item_id, rows[k].copy(), {**_slim(h.payload), "event_id": item_id})
        return points

    def _keep(self, collection: str, points: Mapping[str, ItemPoint], now: float, epoch: int) -> None:
        with self._lock:
            if epoch != self._forgotten:  # what was fetched may predate the change that was forgotten
                return
            for pid, point in points.items():
                self._entries[(collection, pid)] = (
                    now,
                    point.vector.tobytes(),
                    *(point.payload.get(key, "") for key in PAYLOAD_KEYS),
                )
                self._entries.move_to_end((collection, pid))
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def _slim(payload: Mapping[str, Any]) -> dict[str, str]:
    """The payload keys feeds read, where they are strings (the text cut to _TEXT_CHARS)."""
    slim = {key: value for key in PAYLOAD_KEYS if isinstance(value := payload.get(key), str) and value}
    if "text" in slim:
        slim["text"] = slim["text"][:_TEXT_CHARS]
    return slim


def _point(entry: tuple[Any, ...]) -> ItemPoint:
    payload = {key: value for key, value in zip(PAYLOAD_KEYS, entry[2:], strict=True) if value}
    return ItemPoint(payload["event_id"], np.frombuffer(entry[1], dtype=np.float32), payload)
