"""Concurrent HTTP clients for the benches: threads that start together, each on its own connection."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def run_clients(
    base_url: str, headers: Mapping[str, str], clients: int, work: Callable[[int, httpx.Client], T]
) -> tuple[list[T], float]:
    """work(k, http) for k in range(clients), each in its own thread with its own connection (opened
    before the clock starts); their results in order and the seconds from the common start to the
    last one's end. Any client's error ends the bench (SystemExit naming every failed client)."""
    barrier = threading.Barrier(clients + 1)
    results: list[Any] = [None] * clients
    failures: list[str] = []

    def client(k: int) -> None:
        try:
            with httpx.Client(base_url=base_url, headers=dict(headers), timeout=120) as http:
                http.get("/readyz")
                barrier.wait()
                results[k] = work(k, http)
        except Exception as exc:  # reported below; the barrier is broken so no one waits forever
            failures.append(f"client {k}: {type(exc).__name__}: {exc}")
            barrier.abort()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed first: its error is raised below
        barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"concurrent clients failed: {failures}")
    return results, wall
