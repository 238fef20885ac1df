"""Items' unit vectors and payloads, kept in this process by (collection, point id).

A feed asks the vector store for ids and scores only (membership, filters and ranking stay the
store's) and reads each hit's vector and payload here; the misses of a call are one retrieve by id.
Handing 100 hits' vectors and payloads from Qdrant Edge to Python cost about 2 ms a query, three
queries a feed. A point changes under its id only when its item is sent again with another text
or metadata, or deleted (a new encoder writes a new collection). This process forgets such an
item at once: the worker's batch tells it (events.batch.on_done), so does a re-embedding for a
new encoder (training.reindex.on_written), and Recommender.delete_item forgets what it deletes;
with a vector store server, a process that runs no worker serves the old entry for at most
ENTRY_TTL_S. The embedded store has one writer, the process that opened it, so there the
Recommender keeps entries until they change or make room. At most CAPACITY entries
in the process (about 2 KB each at 384 dimensions), whatever the number of tenants whose
recommenders share it (PROCESS_ENTRIES): the least recently used go first, whichever tenant's they
are. An entry keeps only the payload keys feeds read (PAYLOAD_KEYS, str values), as one flat tuple
of strings and bytes (the vector's) beside its read time, which Python's garbage collector does not
track (a tuple holding a dict or an ndarray stays tracked): a cache of 100,000 payload dicts made
each full collection traverse half a million more objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.memo import Memo
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


PROCESS_ENTRIES: Memo[tuple[int, str, str]] = Memo(CAPACITY)  # (owner, collection, point id) -> entry
_owners = itertools.count()


class ItemPoints:
    """The cache: `get` answers from memory and retrieves what it lacks in one call."""

    def __init__(
        self, store: VectorStore, *, entries: Memo[tuple[int, str, str]] = PROCESS_ENTRIES, ttl_s: float = ENTRY_TTL_S
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._shared = entries
        self._owner = next(_owners)  # this cache's keys: two tenants' caches never answer for each other

    def get(self, collection: str, point_ids: Sequence[str]) -> dict[str, ItemPoint]:
        """The points of point_ids that exist, by point id."""
        keys = [(self._owner, collection, pid) for pid in dict.fromkeys(point_ids)]
        lookup = self._shared.look(keys, ttl_s=self.ttl_s)
        found = {key[2]: _point(entry) for key, entry in lookup.found.items()}
        if lookup.missing:
            fetched = self._fetch(collection, [key[2] for key in lookup.missing])
            found.update(fetched)
            self._shared.keep(lookup, {(self._owner, collection, pid): _entry(p) for pid, p in fetched.items()})
        return found

    def forget(self, collection: str, point_ids: Sequence[str]) -> None:
        """Drop these points (their item changed or was deleted)."""
        self._shared.forget([(self._owner, collection, pid) for pid in point_ids])

    def __len__(self) -> int:
        """This cache's entries (a scan of the process's: for tests and logs)."""
        return self._shared.count(lambda key: key[0] == self._owner)

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


def _slim(payload: Mapping[str, Any]) -> dict[str, str]:
    """The payload keys feeds read, where they are strings (the text cut to _TEXT_CHARS)."""
    slim = {key: value for key in PAYLOAD_KEYS if isinstance(value := payload.get(key), str) and value}
    if "text" in slim:
        slim["text"] = slim["text"][:_TEXT_CHARS]
    return slim


def _entry(point: ItemPoint) -> tuple[Any, ...]:
    """What the cache keeps of a point: the float32 vector as bytes, then the PAYLOAD_KEYS' values or ""."""
    return (point.vector.tobytes(), *(point.payload.get(key, "") for key in PAYLOAD_KEYS))


def _point(entry: tuple[Any, ...]) -> ItemPoint:
    payload = {key: value for key, value in zip(PAYLOAD_KEYS, entry[1:], strict=True) if value}
    return ItemPoint(payload["event_id"], np.frombuffer(entry[0], dtype=np.float32), payload)
