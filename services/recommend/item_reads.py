"""Items' co-interaction neighbours and popularity, kept in this process between feeds.

A feed reads the strongest neighbours of its profile items (about 600 rows for 20 items) and the
popularity of its 100-200 candidates: at 100,000 items these two reads were a quarter of a feed's
CPU, and most of what they return was read by an earlier feed. Both aggregates change only when
interactions are recorded. This process forgets the items a recording touched once its commit is
done (interactions.on_recorded), and every neighbour list when an item is deleted; a read that
overlapped a forget keeps nothing. Another process's recordings (a second `sift api` beside a
vector store server) reach a feed here within `ttl_s` (SIFT_RECOMMEND_CACHE_S), as trending items
do; with the embedded store, `sift up` records every interaction itself and keeps entries until
they change (ttl_s infinite). The Recommender's prefill reads those of the items it reads into
the item cache when the process starts. Entries are tuples of strings and floats (untracked by
the garbage collector); at most `capacity` items of each aggregate, the least recently used going
first (services/memo.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy.orm import Session

from services.memo import Memo
from services.recommend import reads

CAPACITY = 100_000
_PREFILL_CHUNK = 1000
_ABSENT = -1.0  # popularity of an item without a stats row (returned as no entry, as the read does)


class ItemReads:
    """`neighbours` and `popularity` answer from memory and read what they lack in one statement."""

    def __init__(self, *, ttl_s: Callable[[], float], capacity: int = CAPACITY) -> None:
        self._ttl_s = ttl_s  # read at each call: the setting may change while the process runs (tests)
        # item -> (per_item, neighbour ids, weights): two flat tuples, the ids interned (each is
        # many items' neighbour), about a fifth of the memory of a tuple of pairs with new strings
        self._neighbours: Memo[str] = Memo(capacity)
        self._popularity: Memo[str] = Memo(capacity)  # item -> positive interactions, or _ABSENT

    def neighbours(self, session: Session, item_ids: Sequence[str], *, per_item: int) -> dict[tuple[str, str], float]:
        """(neighbour, item) -> weight for the strongest `per_item` pairs of each item (reads.neighbour_pairs)."""
        lookup = self._neighbours.look(dict.fromkeys(item_ids), ttl_s=self._ttl_s())
        found, missing = lookup.found, lookup.missing
        for item_id in [i for i, entry in found.items() if entry[0] != per_item]:  # read for another per_item
            del found[item_id]
            missing.append(item_id)
        if missing:
            rows = reads.neighbour_pairs(session, missing, per_item=per_item)
            read: dict[str, tuple[list[str], list[float]]] = {item_id: ([], []) for item_id in missing}
            for (other, item_id), weight in rows.items():
                others, weights = read[item_id]
                others.append(sys.intern(other))
                weights.append(weight)
            values = {item_id: (per_item, tuple(o), tuple(w)) for item_id, (o, w) in read.items()}
            self._neighbours.keep(lookup, values)
            found.update(values)
        return {
            (other, item_id): weight
            for item_id in item_ids
            for other, weight in zip(found[item_id][1], found[item_id][2], strict=True)
        }

    def popularity(self, session: Session, ids: Sequence[str]) -> dict[str, float]:
        """item id -> positive interactions, for the ids that have any (reads.popularity)."""
        lookup = self._popularity.look(dict.fromkeys(ids), ttl_s=self._ttl_s())
        found, missing = lookup.found, lookup.missing
        if missing:
            read = reads.popularity(session, missing)
            values = {item_id: read.get(item_id, _ABSENT) for item_id in missing}
            self._popularity.keep(lookup, values)
            found.update(values)
        return {item_id: value for item_id, value in found.items() if value != _ABSENT}

    def prefill(
        self, session: Session, item_ids: Sequence[str], *, neighbours_of: Sequence[str], per_item: int
    ) -> None:
        """Read the popularity of item_ids and the neighbours of neighbours_of (those with
        interactions) into memory, so that a new process's feeds find them here."""
        step = reads.PAIR_PARTS  # the statement a feed's read uses, built once
        for start in range(0, len(neighbours_of), step):
            self.neighbours(session, neighbours_of[start : start + step], per_item=per_item)
        for start in range(0, len(item_ids), _PREFILL_CHUNK):
            self.popularity(session, item_ids[start : start + _PREFILL_CHUNK])

    def forget(self, item_ids: Iterable[str]) -> None:
        """Drop these items' entries (their interactions changed)."""
        ids = list(item_ids)
        self._neighbours.forget(ids)
        self._popularity.forget(ids)

    def forget_all_neighbours(self) -> None:
        """Drop every neighbour list (an item was deleted: it leaves lists this process cannot name)."""
        self._neighbours.clear()
