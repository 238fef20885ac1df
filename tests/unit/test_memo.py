"""The in-process memo under the feeds' caches: expiry, least recently used first, and a read
that overlapped a forget keeps nothing; the listeners that tell caches of a change."""

from __future__ import annotations

import gc
import weakref

from services.memo import Listeners, Memo


def test_a_kept_value_is_found_until_it_expires() -> None:
    memo: Memo[str] = Memo(10)
    lookup = memo.look(["a", "b"], ttl_s=60)
    assert (lookup.found, lookup.missing) == ({}, ["a", "b"])
    memo.keep(lookup, {"a": 1, "b": 2})
    again = memo.look(["b", "c"], ttl_s=60)
    assert (again.found, again.missing) == ({"b": 2}, ["c"])
    assert memo.look(["a"], ttl_s=0).missing == ["a"]  # older than the ttl


def test_the_least_recently_used_goes_first_beyond_the_capacity() -> None:
    memo: Memo[str] = Memo(2)
    memo.keep(memo.look(["a", "b"], ttl_s=60), {"a": 1, "b": 2})
    memo.look(["a"], ttl_s=60)  # a is now the most recently used
    memo.keep(memo.look(["c"], ttl_s=60), {"c": 3})
    assert memo.keys() == ["a", "c"]
    assert memo.count(lambda key: key != "a") == 1


def test_a_read_that_overlapped_a_forget_or_a_clear_keeps_nothing() -> None:
    memo: Memo[str] = Memo(10)
    lookup = memo.look(["a"], ttl_s=60)
    memo.forget(["other"])  # the source changed while "a" was being read
    memo.keep(lookup, {"a": 1})
    lookup = memo.look(["a"], ttl_s=60)
    memo.clear()
    memo.keep(lookup, {"a": 1})
    assert memo.keys() == []
    memo.keep(memo.look(["a"], ttl_s=60), {"a": 1})
    memo.forget(["a"])
    assert memo.look(["a"], ttl_s=60).missing == ["a"]


def test_listeners_are_told_while_their_owner_lives_and_do_not_keep_it_alive() -> None:
    class Cache:
        def __init__(self) -> None:
            self.forgotten: list[tuple[str, list[str]]] = []

        def forget(self, name: str, ids: list[str]) -> None:
            self.forgotten.append((name, ids))

    listeners: Listeners[[str, list[str]]] = Listeners()
    kept, dropped = Cache(), Cache()
    listeners.add(kept.forget)
    listeners.add(dropped.forget)
    listeners.tell("items", ["a"])
    assert kept.forgotten == dropped.forgotten == [("items", ["a"])]
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None  # being a listener kept nothing alive
    listeners.tell("items", ["b"])
    assert kept.forgotten == [("items", ["a"]), ("items", ["b"])]
