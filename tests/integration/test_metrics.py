"""GET /metrics after real work on PostgreSQL, Redis and embedded Qdrant: events posted through
the API and processed by the task body (one of them failing), a training run, a drift check, a
webhook delivered to a real receiver; every metric of issue 7 is there with a plausible value.
And a real prefork `sift worker` with SIFT_METRICS_PORT: each process serves its own metrics."""

from __future__ import annotations

import contextlib
import random
import socket
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from services.alerts import webhooks
from services.api.app import create_app
from services.classify.serving import KindModel
from services.config import Settings
from services.db.models import Alert, Event, ModelVersion
from services.embedding.encoder import Encoder
from services.events.pipeline import Pipeline
from services.runtime import Runtime
from tests.conftest import authorize, open_runtime, settings_for
from tests.integration.test_webhooks import Receiver
from tests.integration.test_worker_e2e import Deployment
from tests.recording import run_batch
from worker import tasks

TICKETS = [
    "My new card has not arrived yet",
    "I lost my card, please block it",
    "How do I send money to my sister abroad?",
    "My transfer has been pending for three days",
    "POISON: this ticket breaks a processing step",
    "Why was I charged twice for one purchase?",
]
NEWS = ["Acme shares fall after a profit warning", "Acme wins a large defence contract", "Markets are flat today"]
PRODUCTS = ["trail running shoes", "stainless steel frying pan", "wireless headphones"]
LABELED = [  # (text, intent) for a training run
    ("where is my new card", "card"),
    ("my card never came in the post", "card"),
    ("the card I ordered is late", "card"),
    ("please block my stolen card", "card"),
    ("how do I pay my friend abroad", "transfer"),
    ("send money to another bank", "transfer"),
    ("my payment to my landlord is stuck", "transfer"),
    ("how long does a transfer take", "transfer"),
]


def poison_step(model: KindModel, events: Sequence[Event], matrix: np.ndarray, predictions: Sequence[Any]) -> list[Any]:
    """A ticket step that fails on one event, as a poison event does."""
    if any(event.text.startswith("POISON") for event in events):
        raise ValueError("this step cannot handle the event")
    return [{} for _ in events]


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder, pg_url: str, redis_url: str) -> Iterator[Runtime]:
    with open_runtime(
        settings_for(
            data_dir,
            database_url=pg_url,
            broker_url=redis_url,
            model_reload_s=0.01,
            webhook_allow_private=True,
            drift_window=3,
            drift_reference_events=3,
            drift_min_events=2,
            drift_threshold=0.001,
        ),
        encoder,
    ) as rt:
        rt._made["pipeline"] = Pipeline(models=rt.models, store=rt.store, steps={"ticket": [poison_step]})
        yield rt


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name from GET /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include these (0 when there is none)."""
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def before(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def post_events(client: TestClient) -> list[str]:
    events = (
        [{"id": f"t-{i}", "kind": "ticket", "text": text} for i, text in enumerate(TICKETS)]
        + [{"id": f"n-{i}", "kind": "news", "text": text} for i, text in enumerate(NEWS)]
        + [{"id": f"p-{i}", "kind": "product", "text": text} for i, text in enumerate(PRODUCTS)]
    )
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    assert client.post("/v1/events", json={"events": [{"kind": "ticket", "text": " "}]}).status_code == 422
    return [e["id"] for e in events]


def train_intent(client: TestClient, rt: Runtime) -> str:
    """Label texts through the API, process them, run a training run; the version now served."""
    body = {"labels": [{"text": text, "task": "intent", "label": label} for text, label in LABELED]}
    recorded = client.post("/v1/labels", json=body).json()
    assert run_batch(recorded["new_event_ids"])["done"] == len(LABELED)
    run_id = client.post("/v1/training/runs", json={"task": "intent"}).json()["run_id"]
    rt.trainer.execute(run_id)  # what the train worker does with the message
    with rt.db.session_scope() as s:
        active = s.scalar(select(ModelVersion.version).where(ModelVersion.task == "intent"))
        assert active is not None
    client.post(f"/v1/models/{active}/activate")  # promoted or not, serve it
    rt.models.refresh(force=True)
    return active


def deliver_a_webhook(client: TestClient, rt: Runtime, receiver: Receiver) -> str:
    hook = {"url": receiver.url, "secret": "a-long-shared-secret"}
    assert client.put("/v1/webhooks/ops", json=hook).status_code == 200
    now = datetime.now(UTC)
    with rt.db.session_scope() as s:
        alert = Alert(
            entity="ACME",
            rule="negative_share",
            severity="medium",
            state="open",
            window_start=now,
            window_end=now,
            figures={},
            event_ids=[],
            created_at=now,
            updated_at=now,
        )
        s.add(alert)
        s.flush()
        [delivery_id] = webhooks.queue_deliveries(s, alert=alert, event_type="alert.raised", now=now)
    return str(tasks.webhook_deliver(delivery_id))


def test_every_metric_appears_with_a_plausible_value(runtime: Runtime) -> None:
    counters: dict[str, Any] = {
        "received": {k: before("sift_events_received_total", kind=k) for k in ("ticket", "news", "product")},
        "processed": {k: before("sift_events_processed_total", kind=k) for k in ("ticket", "news", "product")},
        "failed": before("sift_events_failed_total", kind="ticket"),
        "lag": before("sift_event_lag_seconds_count", kind="ticket"),
        "batches": before("sift_batch_size_events_count"),
        "encodes": before("sift_encode_duration_seconds_count", device="cpu"),
        "upserts": before("sift_vector_store_duration_seconds_count", operation="upsert"),
        "drift_alerts": before("sift_alerts_raised_total", rule="model_drift"),
        "delivered": before("sift_webhook_deliveries_total", outcome="delivered"),
    }
    receiver = Receiver([200])
    try:
        with TestClient(create_app(runtime, warm_model=False)) as client:
            authorize(client, runtime)
            ids = post_events(client)
            deadline = time.monotonic() + 5
            while value(scrape(client), "sift_queue_depth", queue="ingest") < 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # the coalescing publisher sends after SIFT_BATCH_WAIT_MS
            assert run_batch(ids) == {"done": len(ids) - 1, "failed": 1}
            assert client.get("/v1/events/t-0").json()["status"] == "done"
            assert client.get("/v1/events/t-4").json()["status"] == "failed"
            assert client.get("/v1/items/p-0/similar").status_code == 200  # a vector search
            version = train_intent(client, runtime)
            scores = tasks.drift_check()["default"]
            assert deliver_a_webhook(client, runtime, receiver) == "delivered"
            samples = scrape(client)
    finally:
        receiver.close()

    http = "sift_http_requests_total"
    assert value(samples, http, method="POST", route="/v1/events", status="202") >= 1
    assert value(samples, http, method="POST", route="/v1/events", status="422") >= 1
    assert value(samples, http, method="GET", route="/v1/events/{event_id}", status="200") >= 2
    assert not [lab for lab, _ in samples[http] if "t-0" in lab["route"]]  # templates, not URLs
    assert value(samples, "sift_http_request_duration_seconds_count", route="/v1/items/{item_id}/similar") >= 1
    assert value(samples, "sift_http_request_duration_seconds_sum", route="/v1/events") > 0

    for kind, n in (("ticket", len(TICKETS)), ("news", len(NEWS)), ("product", len(PRODUCTS))):
        assert value(samples, "sift_events_received_total", kind=kind) - counters["received"][kind] == n
    processed = {"ticket": len(TICKETS) - 1 + len(LABELED), "news": len(NEWS), "product": len(PRODUCTS)}
    for kind, n in processed.items():
        assert value(samples, "sift_events_processed_total", kind=kind) - counters["processed"][kind] == n
    assert value(samples, "sift_events_failed_total", kind="ticket") - counters["failed"] == 1
    assert value(samples, "sift_event_lag_seconds_count", kind="ticket") - counters["lag"] == processed["ticket"]
    assert value(samples, "sift_event_lag_seconds_bucket", kind="ticket", le="+Inf") >= processed["ticket"]

    depths = {lab["queue"]: v for lab, v in samples["sift_queue_depth"]}
    assert set(depths) == {"ingest", "alerts", "train"}  # LLEN in this test's Redis database
    assert depths["ingest"] >= 1 and depths["train"] >= 1  # nothing consumes them here

    assert value(samples, "sift_batch_size_events_count") - counters["batches"] >= 2
    assert value(samples, "sift_batch_size_events_sum") >= len(ids)
    assert value(samples, "sift_encode_duration_seconds_count", device="cpu") - counters["encodes"] >= 2
    assert value(samples, "sift_encode_duration_seconds_sum", device="cpu") > 0
    vector = "sift_vector_store_duration_seconds_count"
    assert value(samples, vector, operation="upsert") - counters["upserts"] >= 3  # one per kind at least
    assert value(samples, vector, operation="search") >= 1 and value(samples, vector, operation="retrieve") >= 1

    info = {lab["task"]: lab for lab, v in samples["sift_model_info"] if v == 1}
    assert {"intent", "sentiment", "category"} <= set(info)
    assert info["intent"]["version"] == version and info["intent"]["kind"] == "ticket"
    assert info["sentiment"]["version"].startswith("zero-shot@") and info["category"]["version"] == "none"

    assert value(samples, "sift_training_runs_total", task="intent") >= 1
    assert value(samples, "sift_alerts_raised_total", rule="model_drift") > counters["drift_alerts"]
    assert value(samples, "sift_webhook_deliveries_total", outcome="delivered") - counters["delivered"] == 1
    for name in ("sift_drift_score", "sift_drift_embedding_distance", "sift_drift_last_check_timestamp_seconds"):
        assert value(samples, name, task="intent") > 0, name
    assert value(samples, "sift_drift_score", tenant="default", task="intent") == pytest.approx(scores["intent"])


class MetricsDeployment(Deployment):
    """A `sift worker` deployment with SIFT_METRICS_PORT set."""

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(settings)
        self.port = port

    def env(self) -> dict[str, str]:
        return {**super().env(), "SIFT_METRICS_PORT": str(self.port)}


def free_ports(n: int) -> int:
    """The first of n consecutive ports that are free now."""
    for _ in range(100):
        base = random.randint(20_000, 60_000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + n):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise AssertionError("no free ports")


def scrape_port(port: int) -> dict[str, list[tuple[dict[str, str], float]]] | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_each_worker_process_serves_its_metrics_on_its_own_port(data_dir: Path, pg_url: str, redis_url: str) -> None:
    port = free_ports(2)
    d = MetricsDeployment(settings_for(data_dir, database_url=pg_url, broker_url=redis_url, batch_size=64), port)
    ports = [port, port + 1]  # the main process, then prefork child 1 (the embedded store allows one child)
    try:
        d.start_worker("--queues", "ingest", "--pool", "prefork", "--concurrency", "1")
        d.wait(lambda: all(scrape_port(p) is not None for p in ports), 120, f"metrics on ports {ports}")
        d.ingest(20)
        d.wait(lambda: d.counts() == {"done": 20}, 180, "20 events done")
        scraped = [scrape_port(p) or {} for p in ports]
    finally:
        d.stop_workers()
        d.db.dispose()
    processed = [value(s, "sift_events_processed_total", kind="ticket") for s in scraped]
    assert sum(processed) == 20 and processed[0] == 0  # done by a child, counted where it was done
    assert sum(value(s, "sift_event_lag_seconds_count", kind="ticket") for s in scraped) == 20
    assert sum(value(s, "sift_encode_duration_seconds_count") for s in scraped) >= 1
