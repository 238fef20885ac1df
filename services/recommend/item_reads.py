"""Items' co-interaction neighbours and popularity, kept in this process between feeds.

A feed reads the strongest neighbours of its profile items (about 600 rows for 20 items) and the
popularity of its 100-200 candidates: at 100,000 items these two reads were a quarter of a feed's
CPU, and most of what they return was read by an earlier feed. Both aggregates change only when
interactions are recorded. This process forgets the items a recording touched once its commit is
done (interactions.on_recorded), and every neighbour list when an item is deleted; a read that
overlapped a forget keeps nothing. Another process's recordings (a second `sift api`, a CLI
import) reach a feed here within `ttl_s` (SIFT_RECOMMEND_CACHE_S), as trending items do. Entries
are flat tuples of strings and floats (untracked by the garbage collector); at most `capacity`
items of each aggregate, the oldest read going first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from services.recommend import reads

CAPACITY = 100_000
_ABSENT = -1.0  # popularity of an item without a stats row (returned as no entry, as the read does)


class _Entries:
    """item id -> (when read, value), insertion-ordered (the oldest read is evicted first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: dict[str, tuple[float, Any]] = {}

    def fresh(self, ids: Iterable[str], now: float, ttl_s: float) -> tuple[dict[str, Any], list[str]]:
        found: dict[str, Any] = {}
        missing: list[str] = []
        for item_id in ids:
            entry = self.items.get(item_id)
            if entry is not None and now - entry[0] < ttl_s:
                found[item_id] = entry[1]
            else:
                missing.append(item_id)
        return found, missing

    def keep(self, values: Mapping[str, Any], now: float) -> None:
        for item_id, value in values.items():
            self.items.pop(item_id, None)  # re-inserted at the end: the newest read
            self.items[item_id] = (now, value)
        while len(self.items) > self.capacity:
            del self.items[next(iter(self.items))]


class ItemReads:
    """`neighbours` and `popularity` answer from memory and read what they lack in one statement."""

    def __init__(self, *, ttl_s: Callable[[], float], capacity: int = CAPACITY) -> None:
        self._ttl_s = ttl_s  # read at each call: the setting may change while the process runs (tests)
        self._neighbours = _Entries(capacity)
        self._popularity = _Entries(capacity)
        self._lock = threading.Lock()
        self._forgotten = 0  # counts forgets: a read that overlapped one keeps nothing

    def neighbours(self, session: Session, item_ids: Sequence[str], *, per_item: int) -> dict[tuple[str, str], float]:
        """(neighbour, item) -> weight for the strongest `per_item` pairs of each item (reads.neighbour_pairs)."""
        now, epoch, (found, missing) = self._look(self._neighbours, item_ids)
        for item_id in [i for i, (n, _) in found.items() if n != per_item]:  # read for another per_item
            del found[item_id]
            missing.append(item_id)
        if missing:
            rows = reads.neighbour_pairs(session, missing, per_item=per_item)
            read: dict[str, list[tuple[str, float]]] = {item_id: [] for item_id in missing}
            for (other, item_id), weight in rows.items():
                read[item_id].append((other, weight))
            values = {item_id: (per_item, tuple(pairs)) for item_id, pairs in read.items()}
            self._keep(self._neighbours, values, now, epoch)
            found.update(values)
        return {(other, item_id): weight for item_id in item_ids for other, weight in found[item_id][1]}

    def popularity(self, session: Session, ids: Sequence[str]) -> dict[str, float]:
        """item id -> positive interactions, for the ids that have any (reads.popularity)."""
        now, epoch, (found, missing) = self._look(self._popularity, dict.fromkeys(ids))
        if missing:
            read = reads.popularity(session, missing)
            values = {item_id: read.get(item_id, _ABSENT) for item_id in missing}
            self._keep(self._popularity, values, now, epoch)
            found.update(values)
        return {item_id: value for item_id, value in found.items() if value != _ABSENT}

    def forget(self, item_ids: Iterable[str]) -> None:
        """Drop these items' entries (their interactions changed)."""
        with self._lock:
            self._forgotten += 1
            for item_id in item_ids:
                self._neighbours.items.pop(item_id, None)
                self._popularity.items.pop(item_id, None)

    def forget_all_neighbours(self) -> None:
        """Drop every neighbour list (an item was deleted: it leaves lists this process cannot name)."""
        with self._lock:
            self._forgotten += 1
            self._neighbours.items.clear()

    def _look(self, entries: _Entries, ids: Iterable[str]) -> tuple[float, int, tuple[dict[str, Any], list[str]]]:
        now = time.monotonic()
        with self._lock:
            return now, self._forgotten, entries.fresh(ids, now, self._ttl_s())

    def _keep(self, entries: _Entries, values: Mapping[str, Any], now: float, epoch: int) -> None:
        with self._lock:
            if epoch == self._forgotten:  # what was read may predate a change that was forgotten since
                entries.keep(values, now)
