"""The token buckets behind the per-client rate limit, on a clock the test moves."""

from __future__ import annotations

import threading

import pytest

from services.api.rate_limit import TokenBuckets, client_key
from services.config import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_the_rate_and_the_wait_is_exact() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2, burst=3, max_keys=10, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back every 1/rate seconds
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 100  # refills only up to the burst
    assert [buckets.take("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_clients_have_their_own_buckets() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=10, clock=Clock())
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_memory_is_bounded_by_forgetting_the_least_recently_seen() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take(key)
    buckets.take("a")  # refused, and now the most recently seen
    buckets.take("d")  # b, the least recently seen, goes
    assert len(buckets) == 3
    assert buckets.take("a") > 0  # still remembered: still limited
    assert buckets.take("b") == 0.0  # forgotten: a fresh bucket


def test_concurrent_takes_never_hand_out_more_than_the_burst() -> None:
    buckets = TokenBuckets(rate_per_s=1e-9, burst=100, max_keys=10)
    allowed: list[float] = []

    def hammer() -> None:
        for _ in range(50):
            if buckets.take("k") == 0.0:
                allowed.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 100


def test_the_key_is_the_bearer_token_else_the_address() -> None:
    def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
        return {"headers": headers, "client": ("10.1.2.3", 5555)}

    token = client_key(scope([(b"authorization", b"Bearer s3cret")]))
    assert token.startswith("token:") and "s3cret" not in token
    assert token == client_key(scope([(b"authorization", b"bearer  s3cret")]))
    assert token != client_key(scope([(b"authorization", b"Bearer other")]))
    assert client_key(scope([])) == "addr:10.1.2.3"
    assert client_key(scope([(b"authorization", b"Basic dTpw")])) == "addr:10.1.2.3"
    assert client_key({"headers": [], "client": None}) == "addr:unknown"


def test_settings_default_to_no_limit_and_a_burst_of_one_second() -> None:
    assert Settings().rate_limit_per_s == 0
    assert Settings(rate_limit_per_s=2.5).rate_limit_burst_size == 3
    assert Settings(rate_limit_per_s=0.1).rate_limit_burst_size == 1
    assert Settings(rate_limit_per_s=5, rate_limit_burst=50).rate_limit_burst_size == 50
