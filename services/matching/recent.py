"""What a match reads from SQL beside the vector store, kept in this process for CHECK_S (a Memo:
services/memo.py): the served calibration (with the base threshold) and the FAQ entries its hits
name. A process that matches often then opens no SQL session for most matches (three statements a
match before).

A change made through this process (an FAQ write, a new calibration, a newly derived base
threshold) is told with `changed` and served from the next match on; one made by another process
is served within CHECK_S. A read that overlapped a change keeps nothing, since what it read may
predate the change.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.memo import Lookup, Memo

CHECK_S = 2.0
CAPACITY = 100_000  # entries and calibrations in the process, the least recently used going first
_CALIBRATION, _ENTRY = "calibration", "entry"


@dataclass(frozen=True)
class Entry:
    """What a match shows and checks of an FAQ entry."""

    question: str
    answer: str
    texts: frozenset[str]  # its indexed texts: a hit on any other text is a stale point


@dataclass(frozen=True)
class Seen:
    """What a lookup found kept (calibration None: not kept), the entries to read, and the lookup
    `keep` checks."""

    calibration: Any
    entries: dict[str, Entry]
    missing: set[str]
    lookup: Lookup[tuple[str, Hashable]]


class Recent:
    """The calibrations of the served model pairs and the entries read, each with its read time."""

    def __init__(self) -> None:
        self._memo: Memo[tuple[str, Hashable]] = Memo(CAPACITY)

    def look(self, key: Hashable, ids: Iterable[str]) -> Seen:
        """The calibration of key and the entries of ids read less than CHECK_S ago, and the ids to read."""
        lookup = self._memo.look([(_CALIBRATION, key), *((_ENTRY, i) for i in ids)], ttl_s=CHECK_S)
        entries = {str(k[1]): value for k, value in lookup.found.items() if k[0] == _ENTRY}
        missing = {str(k[1]) for k in lookup.missing if k[0] == _ENTRY}
        return Seen(lookup.found.get((_CALIBRATION, key)), entries, missing, lookup)

    def keep(self, seen: Seen, key: Hashable, calibration: Any, entries: Mapping[str, Entry]) -> None:
        """Keep what was read after `seen` (calibration None: none was), unless something changed since."""
        values: dict[tuple[str, Hashable], Any] = {(_ENTRY, i): entry for i, entry in entries.items()}
        if calibration is not None:
            values[(_CALIBRATION, key)] = calibration
        self._memo.keep(seen.lookup, values)

    def changed(self) -> None:
        """The base or the calibration changed: forget everything."""
        self._memo.clear()
