"""Every Prometheus metric Sift exports, in one place, and the small helpers that feed them.

Metrics live in prometheus_client's default registry, one per process. The API serves them at
GET /metrics; a worker process serves them on its own port when SIFT_METRICS_PORT is set
(`serve_worker_metrics`: the worker's main process on the port, prefork child i on port + i);
`sift up` runs the API and the worker in one process, so its /metrics holds both. Names follow
the Prometheus conventions: counters end in `_total`, durations are `_seconds`. Label values
come from small fixed sets (kinds, tasks, queues, route templates), never from ids or raw URLs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from services.config import EVENT_KINDS

log = logging.getLogger(__name__)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "sift_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "sift_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=_FAST,
)
EVENTS_RECEIVED = Counter("sift_events_received_total", "Events accepted by POST /v1/events, by kind", ["kind"])
EVENTS_PROCESSED = Counter("sift_events_processed_total", "Events processed to status done, by kind", ["kind"])
EVENTS_FAILED = Counter("sift_events_failed_total", "Events a batch recorded as failed, by kind", ["kind"])
EVENT_LAG = Histogram(
    "sift_event_lag_seconds",
    "From received (the API wrote the row) to done (the worker recorded it), by kind",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
)
BATCH_SIZE = Histogram(
    "sift_batch_size_events", "Events per batch the pipeline processed", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
ENCODE_DURATION = Histogram(
    "sift_encode_duration_seconds",
    "One encode call (a forward pass over a batch of texts), by device",
    ["device"],
    buckets=(*_FAST, 30.0),
)
VECTOR_STORE_DURATION = Histogram(
    "sift_vector_store_duration_seconds",
    "One vector store call, by operation (upsert, search, recommend, retrieve, delete, count)",
    ["operation"],
    buckets=_FAST,
)
MODEL_INFO = Gauge(
    "sift_model_info",
    "1 per tenant and classification task: the version it is served with (zero-shot@…, or none) and the kind's encoder",
    ["tenant", "task", "kind", "version", "encoder"],
)
ALERTS_RAISED = Counter("sift_alerts_raised_total", "Alerts opened, by rule", ["rule"])
WEBHOOK_DELIVERIES = Counter(
    "sift_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retry (failed, tried again later), failed (gave up)",
    ["outcome"],
)
TRAINING_RUNS = Counter(
    "sift_training_runs_total",
    "Training runs ended, by task and outcome (promoted, rejected, failed)",
    ["task", "outcome"],
)
DRIFT_SCORE = Gauge("sift_drift_score", "Drift of a task: mean of its two components, 0 to 1", ["tenant", "task"])
DRIFT_LABELS = Gauge(
    "sift_drift_label_divergence",
    "Jensen-Shannon divergence (base 2) of recent vs reference labels",
    ["tenant", "task"],
)
DRIFT_EMBEDDING = Gauge(
    "sift_drift_embedding_distance",
    "1 - cosine of the mean embeddings of recent vs reference events",
    ["tenant", "task"],
)
DRIFT_CHECKED = Gauge(
    "sift_drift_last_check_timestamp_seconds", "When this process last measured drift", ["tenant", "task"]
)

for _kind in EVENT_KINDS:  # known label values start at 0, so rate() and absence mean something
    for _metric in (EVENTS_RECEIVED, EVENTS_PROCESSED, EVENTS_FAILED):
        _metric.labels(kind=_kind)
for _rule in ("negative_share", "negative_spike", "sentiment_drop", "model_drift"):
    ALERTS_RAISED.labels(rule=_rule)
for _outcome in ("delivered", "retry", "failed"):
    WEBHOOK_DELIVERIES.labels(outcome=_outcome)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count and time one HTTP request."""
    HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    HTTP_DURATION.labels(method=method, route=route).observe(seconds)


def count_received(kinds: Iterable[str]) -> None:
    """Count accepted events, one kind per event."""
    for kind in kinds:
        EVENTS_RECEIVED.labels(kind=kind).inc()


def observe_outcomes(outcomes: Iterable[tuple[str, bool, datetime]], *, now: datetime) -> None:
    """Count a batch's recorded outcomes, (kind, ok, received_at) each, and observe the lag of
    the done ones (now is the processed_at the batch wrote)."""
    for kind, ok, received_at in outcomes:
        if ok:
            EVENTS_PROCESSED.labels(kind=kind).inc()
            EVENT_LAG.labels(kind=kind).observe(max(0.0, (now - received_at).total_seconds()))
        else:
            EVENTS_FAILED.labels(kind=kind).inc()


def vector_timer(operation: str) -> Any:
    """A context manager timing one vector store call."""
    return VECTOR_STORE_DURATION.labels(operation=operation).time()


_tenant_names = False  # SIFT_METRICS_TENANT_LABELS: tenant names in labels only when opted in


def show_tenant_names(on: bool) -> None:
    """Label series with tenant names (on), or with an opaque stable tag per tenant (off)."""
    global _tenant_names
    _tenant_names = on


def tenant_label(tenant: str) -> str:
    """The tenant label of a series: its name when opted in (and always for the default tenant,
    which every install has), else "t-" and 10 hex digits of its SHA-256, distinct per tenant."""
    if _tenant_names or tenant == "default":
        return tenant
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:10]


_models_lock = threading.Lock()
_served: dict[str, list[tuple[str, ...]]] = {}  # per tenant, the label sets of its model info


def set_served_models(tenant: str, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """Replace a tenant's model info with (task, kind, version, encoder) rows."""
    with _models_lock:
        for labels in _served.pop(tenant, []):
            _remove(MODEL_INFO, *labels)
        _served[tenant] = [(tenant_label(tenant), *row) for row in rows]
        for labels in _served[tenant]:
            MODEL_INFO.labels(*labels).set(1)


def served_models(tenant: str) -> list[tuple[str, str, str, str]]:
    """The (task, kind, version, encoder) rows this process serves a tenant with (none in a process
    that serves no model, e.g. an API replica in production)."""
    with _models_lock:
        return [(task, kind, version, encoder) for _, task, kind, version, encoder in _served.get(tenant, [])]


def histogram_totals(histogram: Histogram) -> tuple[float, float]:
    """(observations, sum of the observed values) of a histogram, over all its label sets."""
    count = total = 0.0
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return count, total


def set_drift(
    tenant: str,
    task: str,
    *,
    score: float | None,
    label_divergence: float | None,
    embedding_distance: float | None,
    at: float,
) -> None:
    """Export a tenant's task's drift; a component that could not be measured is removed, not zeroed."""
    tenant = tenant_label(tenant)
    for gauge, value in ((DRIFT_SCORE, score), (DRIFT_LABELS, label_divergence), (DRIFT_EMBEDDING, embedding_distance)):
        if value is None:
            _remove(gauge, tenant, task)
        else:
            gauge.labels(tenant=tenant, task=task).set(value)
    DRIFT_CHECKED.labels(tenant=tenant, task=task).set(at)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set in this process
        gauge.remove(*labels)


def render() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- queue depth, read from the broker at scrape time -------------------------------------------


class QueueDepths:
    """A collector: `sift_queue_depth{queue}` read from the broker when Prometheus scrapes; no
    sample at all when the broker does not answer (alert on absent(), not on a stale value)."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("sift_queue_depth", "Messages waiting in a broker queue", labels=["queue"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("sift_queue_depth", "Messages waiting in a broker queue", labels=["queue"])
        try:
            depths = self._read()
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.warning("queue depths unavailable: %s", exc)
            depths = {}
        for queue, depth in sorted(depths.items()):
            family.add_metric([queue], depth)
        yield family


_queue_collector: QueueDepths | None = None
_queue_lock = threading.Lock()


def watch_queues(read: Callable[[], Mapping[str, int]]) -> None:
    """Export the queue depths that read() returns at each scrape (the API passes the broker
    reader of services.enqueue); replaces a previous registration, so a second app in the same
    process (tests) does not clash."""
    global _queue_collector
    with _queue_lock:
        if _queue_collector is not None:
            REGISTRY.unregister(_queue_collector)
        _queue_collector = QueueDepths(read)
        REGISTRY.register(_queue_collector)


class OldestUnfinished:
    """A collector: `sift_oldest_unfinished_event_age_seconds`, read from SQL at scrape time; 0
    when nothing waits, no sample while the database does not answer."""

    HELP = "Seconds since the oldest event still queued or processing arrived (every tenant); 0 when none"

    def __init__(self, read: Callable[[], float | None]) -> None:
        self._read = read

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("sift_oldest_unfinished_event_age_seconds", self.HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            age = self._read()
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("oldest unfinished event unknown: %s", exc)
            return
        yield GaugeMetricFamily("sift_oldest_unfinished_event_age_seconds", self.HELP, value=max(0.0, age or 0.0))


_backlog_collector: OldestUnfinished | None = None


def watch_backlog(read: Callable[[], float | None]) -> None:
    """Export the age read() returns at each scrape (replacing a previous registration, as watch_queues)."""
    global _backlog_collector
    with _queue_lock:
        if _backlog_collector is not None:
            REGISTRY.unregister(_backlog_collector)
        _backlog_collector = OldestUnfinished(read)
        REGISTRY.register(_backlog_collector)


def serve_worker_metrics(port: int) -> bool:
    """Serve this process's metrics over HTTP on port (a worker process); False when the port is taken."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("cannot serve metrics on port %d: %s", port, exc)
        return False
    log.info("metrics on :%d/metrics (pid %d)", port, os.getpid())
    return True
