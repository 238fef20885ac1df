"""Readiness checks with a deadline: a hanging dependency makes a check fail, not the caller wait."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sift-health")


def run_checks(checks: Mapping[str, Callable[[], None]], *, timeout_s: float) -> dict[str, str]:
    """Run checks in parallel; each is 'ok' or the reason it failed within timeout_s overall."""
    futures = {name: _pool.submit(check) for name, check in checks.items()}
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            results[name] = "ok"
        except FutureTimeout:
            results[name] = f"no answer within {timeout_s:g}s"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"[:300]
    return results
