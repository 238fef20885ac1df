"""Values read from a slower source (the vector store, SQL), kept in this process by key.

A caller looks its keys up, reads the missing ones from the source, and keeps what it read. An
entry is served for `ttl_s` after its read; at most `capacity` entries, the least recently used
going first. A change to a source is told with `forget` (or `clear`); a read that overlapped any
forget keeps nothing, since what it read may predate the change. Entries should be tuples
of strings, numbers and bytes: the garbage collector then stops tracking them, so a full cache
adds nothing to a collection's work. `Listeners` is how the code that changes a source tells the
caches over it, in this process.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

K = TypeVar("K", bound=Hashable)
P = ParamSpec("P")


class Listeners(Generic[P]):
    """Bound methods told of a change, held weakly: a listener goes with its owner (a closed
    recommender's caches are no longer told, nor kept alive by being listeners)."""

    def __init__(self) -> None:
        self._refs: list[weakref.WeakMethod[Callable[P, None]]] = []

    def add(self, listener: Callable[P, None]) -> None:
        """Tell the bound method listener of every change from now on."""
        self._refs.append(weakref.WeakMethod(listener))  # type: ignore[arg-type]

    def tell(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener still alive with these arguments."""
        for ref in list(self._refs):
            listener = ref()
            if listener is None:
                self._refs.remove(ref)
            else:
                listener(*args, **kwargs)


@dataclass
class Lookup(Generic[K]):
    """What a lookup found and what the caller must read, with what `keep` needs to check."""

    found: dict[K, Any]
    missing: list[K]
    at: float = field(repr=False)
    epoch: int = field(repr=False)


class Memo(Generic[K]):
    """Entries key -> (when read, value), least recently used first; safe across threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._forgotten = 0  # counts forgets: a read that overlapped one keeps nothing

    def look(self, keys: Iterable[K], *, ttl_s: float) -> Lookup[K]:
        """The values of keys read less than ttl_s ago (now the most recently used), and the rest."""
        now, found, missing = time.monotonic(), {}, []
        with self._lock:
            for key in keys:
                entry = self._items.get(key)
                if entry is not None and now - entry[0] < ttl_s:
                    self._items.move_to_end(key)
                    found[key] = entry[1]
                else:
                    missing.append(key)
            return Lookup(found, missing, now, self._forgotten)

    def keep(self, lookup: Lookup[K], values: Mapping[K, Any]) -> None:
        """Keep values read after lookup, unless something was forgotten since it."""
        with self._lock:
            if lookup.epoch != self._forgotten:
                return
            for key, value in values.items():
                self._items[key] = (lookup.at, value)
                self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def forget(self, keys: Iterable[K]) -> None:
        """Drop these keys' entries (their source changed)."""
        with self._lock:
            self._forgotten += 1
            for key in keys:
                self._items.pop(key, None)

    def clear(self) -> None:
        """Drop every entry (a change whose keys cannot be named)."""
        with self._lock:
            self._forgotten += 1
            self._items.clear()

    def count(self, where: Callable[[K], bool]) -> int:
        """Entries whose key satisfies where (a scan: for tests and logs)."""
        with self._lock:
            return sum(1 for key in self._items if where(key))

    def keys(self) -> list[K]:
        """The keys, least recently used first (for tests)."""
        with self._lock:
            return list(self._items)
