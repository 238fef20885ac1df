"""What a match reads from SQL beside the vector store, kept in this process for CHECK_S: the
served calibration (with the base threshold) and the FAQ entries its hits name. A process that
matches often then opens no SQL session for most matches (three statements a match before).

A change made through this process (an FAQ write, a new calibration, a newly derived base
threshold) is told with `changed` and served from the next match on; one made by another process
is served within CHECK_S. A read that overlapped a change keeps nothing, since what it read may
predate the change.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHECK_S = 2.0


@dataclass(frozen=True)
class Entry:
    """What a match shows and checks of an FAQ entry."""

    question: str
    answer: str
    texts: frozenset[str]  # its indexed texts: a hit on any other text is a stale point


@dataclass(frozen=True)
class Seen:
    """What a lookup found kept (calibration None: not kept), the entries to read, and what `keep` checks."""

    calibration: Any
    entries: dict[str, Entry]
    missing: set[str]
    at: float
    change: int


class Recent:
    """The calibration of one served model pair and the entries read, each with its read time."""

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._change = 0  # the number of the last `changed`
        self._calibration: tuple[Hashable, float, Any] | None = None
        self._entries: dict[str, tuple[float, Entry]] = {}

    def look(self, key: Hashable, ids: Iterable[str]) -> Seen:
        """The calibration of key and the entries of ids read less than CHECK_S ago, and the ids to read."""
        now, change, held, entries = time.monotonic(), self._change, self._calibration, self._entries
        calibration = held[2] if held is not None and held[0] == key and now - held[1] < CHECK_S else None
        found: dict[str, Entry] = {}
        missing: set[str] = set()
        for faq_id in ids:
            entry = entries.get(faq_id)
            if entry is not None and now - entry[0] < CHECK_S:
                found[faq_id] = entry[1]
            else:
                missing.add(faq_id)
        return Seen(calibration, found, missing, now, change)

    def keep(self, seen: Seen, key: Hashable, calibration: Any, entries: Mapping[str, Entry]) -> None:
        """Keep what was read after `seen` (calibration None: none was), unless something changed since."""
        if seen.change != self._change:
            return
        if calibration is not None:
            self._calibration = (key, seen.at, calibration)
        self._entries.update((faq_id, (seen.at, entry)) for faq_id, entry in entries.items())

    def changed(self) -> None:
        """The base or the calibration changed: forget everything."""
        self._change = next(self._count)
        self._calibration = None
        self._entries = {}
