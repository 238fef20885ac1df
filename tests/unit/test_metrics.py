"""Metrics without services: HTTP requests labelled by route template, the on-disk broker's queue
depths, the worker's metrics port, and the names in the exposition."""

from __future__ import annotations

import socket
import urllib.request

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from services import metrics
from services.api.request_context import UNMATCHED, RequestContext


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_route_template_method_and_status() -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "boom":
            raise RuntimeError("boom")
        return {"id": thing_id}

    app.add_middleware(RequestContext)
    route = "/things/{thing_id}"
    ok = sample("sift_http_requests_total", method="GET", route=route, status="200")
    failed = sample("sift_http_requests_total", method="GET", route=route, status="500")
    missing = sample("sift_http_requests_total", method="GET", route=UNMATCHED, status="404")
    timed = sample("sift_http_request_duration_seconds_count", method="GET", route=route)
    with TestClient(app, raise_server_exceptions=False) as client:
        for i in range(3):
            assert client.get(f"/things/{i}").status_code == 200  # three URLs, one series
        assert client.get("/things/boom").status_code == 500
        assert client.get("/nowhere").status_code == 404
    assert sample("sift_http_requests_total", method="GET", route=route, status="200") == ok + 3
    assert sample("sift_http_requests_total", method="GET", route=route, status="500") == failed + 1
    assert sample("sift_http_requests_total", method="GET", route=UNMATCHED, status="404") == missing + 1
    assert sample("sift_http_request_duration_seconds_count", method="GET", route=route) == timed + 4
    assert REGISTRY.get_sample_value("sift_http_requests_total", {"route": "/things/1"}) is None


def test_queue_depths_are_read_at_scrape_time_and_a_second_app_replaces_the_reader() -> None:
    depths = {"ingest": 0, "train": 0}
    metrics.watch_queues(lambda: depths)
    assert sample("sift_queue_depth", queue="train") == 0
    depths["train"] = 3
    assert sample("sift_queue_depth", queue="train") == 3
    metrics.watch_queues(lambda: {"ingest": 1})  # a second app in the process replaces the reader
    assert sample("sift_queue_depth", queue="ingest") == 1
    assert REGISTRY.get_sample_value("sift_queue_depth", {"queue": "train"}) is None


def test_a_broker_that_fails_yields_no_depth_instead_of_failing_the_scrape() -> None:
    def broken() -> dict[str, int]:
        raise ConnectionError("down")

    families = list(metrics.QueueDepths(broken).collect())
    assert families[0].name == "sift_queue_depth" and families[0].samples == []


def test_a_worker_process_serves_its_metrics_on_its_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert metrics.serve_worker_metrics(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "sift_events_processed_total" in body
    assert not metrics.serve_worker_metrics(port)  # taken: a warning, not a crash


def test_every_metric_name_follows_the_conventions() -> None:
    families = [
        family
        for value in vars(metrics).values()
        if isinstance(value, Counter | Gauge | Histogram)
        for family in value.describe()
    ]
    assert len(families) >= 17
    for family in families:
        assert family.name.startswith("sift_"), family.name
        if family.type == "histogram" and family.name != "sift_batch_size_events":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name
    counters = [family.name for family in families if family.type == "counter"]
    assert all(f"# TYPE {name}_total counter" in metrics.render()[0].decode() for name in counters)
