"""GET /healthz and GET /readyz with PostgreSQL and Redis behind TCP proxies that the test stops,
hangs and restarts (the machine's servers are shared and stay up): /readyz answers within 1 s
whatever a dependency does, 503 while it is down or hung, 200 once it is back; /healthz answers
throughout, even while requests stuck on a hung database fill the request thread pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.migrate import upgrade
from services.embedding.encoder import Encoder
from services.runtime import Runtime
from tests.conftest import authorize, settings_for
from tests.tcp_proxy import TcpProxy, tcp_proxy

BOUND_S = 1.0  # every answer, measured around the whole request
Stack = tuple[TestClient, dict[str, TcpProxy]]


@pytest.fixture
def stack(data_dir: Path, pg_url: str, redis_url: str, encoder: Encoder) -> Iterator[Stack]:
    upgrade(pg_url)
    with tcp_proxy(pg_url) as pg, tcp_proxy(redis_url) as broker:
        runtime = Runtime(settings_for(data_dir, database_url=pg.url, broker_url=broker.url))
        runtime._made["encoder"] = encoder
        runtime.store  # noqa: B018 - opened (collections created) before anything is timed
        with TestClient(create_app(runtime, warm_model=False)) as client:
            authorize(client, runtime)
            yield client, {"database": pg, "broker": broker}
        runtime.close()


def probe(client: TestClient, path: str = "/readyz") -> tuple[int, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert elapsed < BOUND_S, f"{path} took {elapsed:.2f}s: {response.text}"
    return response.status_code, response.json()


def ready_within(client: TestClient, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (answer := probe(client))[0] != 200:
        assert time.monotonic() < deadline, f"not ready {seconds}s after the dependency returned: {answer}"
        time.sleep(0.05)
    assert answer[1] == {
        "status": "ready",
        "checks": dict.fromkeys(CHECKS, "ok"),
    }


CHECKS = ("database", "broker", "model", "vectors", "backlog", "vector writes")


def only_failing(checks: dict[str, str], dependency: str) -> None:
    assert checks[dependency] != "ok", checks
    with_it = {dependency, "backlog"} if dependency == "database" else {dependency}  # the backlog is read from SQL
    assert {k: v for k, v in checks.items() if k not in with_it} == {k: "ok" for k in CHECKS if k not in with_it}


def health_threads() -> int:
    return sum(t.name.startswith("sift-health") for t in threading.enumerate())


@pytest.mark.parametrize("dependency", ["database", "broker"])
def test_readyz_turns_503_within_1s_when_a_dependency_stops_and_200_when_it_returns(
    stack: Stack, dependency: str
) -> None:
    client, proxies = stack
    ready_within(client, 30)
    proxies[dependency].stop()  # refused, as when the server is down
    status, body = probe(client)  # the first probe after the stop already says so
    assert status == 503 and body["status"] == "not ready"
    only_failing(body["checks"], dependency)
    assert probe(client, "/healthz") == (200, {"status": "ok"})
    proxies[dependency].start()
    ready_within(client, 1.0)


@pytest.mark.parametrize("dependency", ["database", "broker"])
def test_readyz_answers_within_1s_while_a_dependency_hangs_without_piling_up_threads(
    stack: Stack, dependency: str
) -> None:
    client, proxies = stack
    ready_within(client, 30)
    proxies[dependency].hang()  # accepts, never answers: no error ever comes back by itself
    for _ in range(8):
        status, body = probe(client)
        assert status == 503
        only_failing(body["checks"], dependency)
        assert probe(client, "/healthz")[0] == 200
    # one check per dependency at most, however many probes came while it hung
    assert health_threads() <= 4
    proxies[dependency].start()
    ready_within(client, 1.0)


def test_probes_answer_while_requests_stuck_on_a_hung_database_fill_the_thread_pool(
    stack: Stack,
) -> None:
    client, proxies = stack
    ready_within(client, 30)
    proxies["database"].hang()
    with ThreadPoolExecutor(max_workers=60) as stuck:
        # sync routes run in Starlette's pool of 40 threads: these take all of it
        requests = [stuck.submit(client.get, "/v1/stats") for _ in range(60)]
        time.sleep(0.5)
        assert not any(r.done() for r in requests)
        for _ in range(3):
            assert probe(client)[0] == 503
            assert probe(client, "/healthz")[0] == 200
        proxies["database"].start()  # the stuck requests fail (503) or finish now
        assert {r.result(timeout=30).status_code for r in requests} <= {200, 503}
    ready_within(client, 1.0)
