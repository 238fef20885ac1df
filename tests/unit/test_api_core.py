"""`sift up` runs its API threads on one core; the worker's encode threads and the thread counts
still see every core of the process."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.cli.serve import on_one_core
from services.config import usable_cores
from services.embedding.encoder import on_every_core

CORES = os.sched_getaffinity(os.getpid()) if hasattr(os, "sched_getaffinity") else set()
pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="one core (or no CPU affinity): nothing to confine")


def _in_api_thread(check):  # type: ignore[no-untyped-def]
    """check() run in a thread started by on_one_core, as `sift up` starts the API; its result."""
    seen: list[object] = []
    thread = threading.Thread(target=on_one_core, args=(lambda: seen.append(check()),))
    thread.start()
    thread.join()
    return seen[0]


def test_the_api_thread_and_the_threads_it_starts_run_on_one_core() -> None:
    def check() -> tuple[set[int], set[int]]:
        with ThreadPoolExecutor(1) as pool:  # as AnyIO starts its request threads from the event loop
            return os.sched_getaffinity(0), pool.submit(os.sched_getaffinity, 0).result()

    api, request = _in_api_thread(check)
    assert api == request == {max(CORES)}
    assert os.sched_getaffinity(0) == CORES  # the calling thread (the worker's, in `sift up`) keeps every core


def test_thread_counts_and_encode_threads_see_every_core_from_the_api_thread() -> None:
    def check() -> tuple[int, set[int]]:
        with ThreadPoolExecutor(1, initializer=on_every_core) as encode:  # the encoder's helper threads
            return usable_cores(), encode.submit(os.sched_getaffinity, 0).result()

    cores, encode = _in_api_thread(check)
    assert cores == len(CORES)  # torch / ONNX Runtime threads are not cut to one when the API loads the model
    assert encode == CORES
