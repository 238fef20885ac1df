"""Readiness checks: one run per name in flight however often they are asked, a plain answer for
NotReady, the exception's name and message otherwise."""

from __future__ import annotations

import threading
from concurrent.futures import wait

from services.errors import DatabaseUnavailable
from services.health import Checks, NotReady


def alive() -> int:
    return sum(t.name.startswith("sift-health") for t in threading.enumerate())


def test_a_hanging_check_is_joined_not_started_again() -> None:
    checks, release, runs = Checks(), threading.Event(), []

    def hangs() -> None:
        runs.append(1)
        release.wait(10)

    before = alive()
    for _ in range(20):
        futures = checks.start({"database": hangs})
        wait(futures.values(), timeout=0.01)
        assert checks.outcomes(futures)["database"].startswith("no answer after")
    assert len(runs) == 1 and alive() == before + 1
    release.set()
    wait(futures.values(), timeout=5)
    assert checks.outcomes(futures) == {"database": "ok"}
    futures = checks.start({"database": hangs})  # done: the next probe runs it afresh
    wait(futures.values(), timeout=5)
    assert len(runs) == 2


def test_outcomes_say_why() -> None:
    def loading() -> None:
        raise NotReady("model still loading")

    def down() -> None:
        raise ConnectionRefusedError("Error 111 connecting to 10.1.2.3:6379. Connection refused.")

    def database() -> None:
        raise DatabaseUnavailable('database unavailable: connection to server at "10.1.2.3", port 5432 failed')

    checks = Checks()
    futures = checks.start({"model": loading, "broker": down, "database": database, "vectors": lambda: None})
    wait(futures.values(), timeout=5)
    # The failing dependency is named, its address is not (that goes to the log).
    assert checks.outcomes(futures) == {
        "model": "model still loading",
        "broker": "ConnectionRefusedError",
        "database": "database unavailable; retry later",
        "vectors": "ok",
    }
