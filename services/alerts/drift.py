"""Model drift: do the events a task sees now still look like those its model was made for?

Per classification task, two components, each from 0 (the same) to 1:
- label divergence: the Jensen-Shannon divergence (base 2) between the labels predicted for the
  recent events and the reference label distribution;
- embedding distance: 1 - the cosine similarity of the mean embedding of the recent events and
  the mean embedding of the reference events (clamped to [0, 1]).
The drift score is the mean of the components that could be measured (a task with no head yet
has only the embedding one); a side with fewer than SIFT_DRIFT_MIN_EVENTS events (or vectors)
leaves its component out, and with neither there is no score.

Recent: the last SIFT_DRIFT_WINDOW done events of the task's kind, by processed_at.
Reference, with a trained model: the active version's training snapshot, i.e. its label counts
(model_versions.snapshot.per_label) and the vectors of the latest SIFT_DRIFT_REFERENCE_EVENTS
labeled events it was trained on. Without one: the first SIFT_DRIFT_REFERENCE_EVENTS processed
events of the kind, their predicted labels and their vectors. Vectors are read by point id from
the kind's current collection, so both sides are in one encoder's space (a re-index re-embeds
both); nothing is encoded here.

`measure` computes (GET /v1/drift); `check` (beat, every SIFT_DRIFT_INTERVAL_S) also exports the
gauges and keeps one alert per task in the alerts table: rule `model_drift`, entity = the task
name, opened (and logged as a warning) when the score reaches SIFT_DRIFT_THRESHOLD, refreshed
while it holds, cleared when it no longer does, then SIFT_ALERT_COOLDOWN_S before another. These
alerts are operational: they are listed by GET /v1/alerts but not sent to webhooks, which carry
news alerts to clients; page on `sift_drift_score` through Prometheus instead.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services import metrics
from services.alerts import rules as alerts
from services.classify.tasks import list_tasks
from services.config import Settings
from services.db.models import Alert, Event, KindEncoder, Label, ModelVersion, as_utc
from services.vectors.base import VectorStore
from services.vectors.schema import collection_for

log = logging.getLogger(__name__)

RULE = "model_drift"
SEVERITY = "medium"


# --- the measures ---------------------------------------------------------------------------


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence, base 2 (0 = same, 1 = disjoint), of two label counts or shares."""
    keys = sorted(set(p) | set(q))
    a = np.array([float(p.get(k, 0.0)) for k in keys])
    b = np.array([float(q.get(k, 0.0)) for k in keys])
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("both distributions need some mass")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(1.0, max(0.0, (kl(a) + kl(b)) / 2))


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of two mean embeddings, clamped to [0, 1]."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0 or not math.isfinite(norm):
        raise ValueError("a mean embedding is zero")
    return min(1.0, max(0.0, 1.0 - float(np.dot(a, b)) / norm))


def combined(label_divergence: float | None, distance: float | None) -> float | None:
    """The drift score: the mean of the measured components; None when neither was."""
    parts = [x for x in (label_divergence, distance) if x is not None]
    return sum(parts) / len(parts) if parts else None


# --- what is compared -----------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a comparison: how many events, their label counts, their mean vector."""

    events: int
    labels: dict[str, float]
    mean: np.ndarray | None
    vectors: int
    event_ids: list[str] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class TaskDrift:
    """A task's drift: where the reference came from, both components, the score."""

    task: str
    kind: str
    reference: str  # "model <version>", "first events" or "none"
    recent_events: int
    reference_events: int
    label_divergence: float | None
    embedding_distance: float | None
    score: float | None
    threshold: float
    recent_labels: dict[str, float]
    reference_labels: dict[str, float]
    window_start: datetime | None = None
    window_end: datetime | None = None
    event_ids: list[str] = field(default_factory=list)

    @property
    def drifting(self) -> bool:
        """The score reached the threshold."""
        return self.score is not None and self.score >= self.threshold

    def figures(self) -> dict[str, Any]:
        """What an alert and the API show."""
        return {
            "score": _round(self.score),
            "label_divergence": _round(self.label_divergence),
            "embedding_distance": _round(self.embedding_distance),
            "threshold": self.threshold,
            "reference": self.reference,
            "recent_events": self.recent_events,
            "reference_events": self.reference_events,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


class _Reader:
    """Reads the sides of one measurement; each kind's recent and first events are read once."""

    def __init__(self, session: Session, store: VectorStore, settings: Settings) -> None:
        self.session, self.store, self.settings = session, store, settings
        self._cache: dict[tuple[str, str], list[tuple[str, str, dict[str, Any], datetime | None]]] = {}
        self._means: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray | None, int]] = {}

    def collection(self, kind: str) -> str:
        """The kind's current collection (a re-index may have switched it)."""
        row = self.session.get(KindEncoder, kind)
        return row.collection if row else collection_for(kind, prefix=self.settings.tenant_prefix)

    def events(self, kind: str, *, latest: bool) -> list[tuple[str, str, dict[str, Any], datetime | None]]:
        """(id, point id, predictions, processed_at) of the latest or the first done events of a kind."""
        key = (kind, "latest" if latest else "first")
        if key not in self._cache:
            order = (Event.processed_at.desc(), Event.id.desc()) if latest else (Event.processed_at, Event.id)
            limit = self.settings.drift_window if latest else self.settings.drift_reference_events
            stmt = (
                select(Event.id, Event.point_id, Event.predictions, Event.processed_at)
                .where(Event.kind == kind, Event.status == "done")
                .order_by(*order)
                .limit(limit)
            )
            self._cache[key] = [(r[0], r[1], r[2] or {}, r[3]) for r in self.session.execute(stmt)]
        return self._cache[key]

    def mean_vector(self, kind: str, point_ids: Sequence[str]) -> tuple[np.ndarray | None, int]:
        """The mean of the stored vectors of these points, and how many were found."""
        key = (kind, tuple(point_ids))
        if key not in self._means:  # two tasks of one kind share their events
            hits = self.store.retrieve(self.collection(kind), list(point_ids), with_vectors=True) if point_ids else []
            vectors = [hit.vector for hit in hits if hit.vector]
            mean = np.asarray(vectors, dtype=np.float64).mean(axis=0) if vectors else None
            self._means[key] = (mean, len(vectors))
        return self._means[key]

    def predicted(self, kind: str, task: str, *, latest: bool, exclude: frozenset[str] = frozenset()) -> Side:
        """A side made of processed events (less those excluded): their predicted labels for
        task and their vectors."""
        rows = [row for row in self.events(kind, latest=latest) if row[0] not in exclude]
        labels = Counter(str(p[task]["label"]) for _, _, p, _ in rows if isinstance(p.get(task), dict))
        mean, found = self.mean_vector(kind, [point for _, point, _, _ in rows])
        times = [as_utc(t) for _, _, _, t in rows if t is not None]
        return Side(
            len(rows),
            dict(labels),
            mean,
            found,
            [r[0] for r in rows[:50]],
            min(times, default=None),
            max(times, default=None),
        )

    def trained(self, kind: str, task: str, version: ModelVersion) -> Side:
        """The training snapshot of a version: its label counts and its labeled events' vectors."""
        snapshot = version.snapshot or {}
        upto = int(snapshot.get("max_label_id") or 0)
        stmt = (
            select(Event.point_id)
            .join(Label, Label.event_id == Event.id)
            .where(Label.task == task, Label.id <= upto, Event.kind == kind)
            .where(or_(Label.superseded_by.is_(None), Label.superseded_by > upto))
            .where(or_(Label.outcome.is_(None), Label.outcome != "rejected"))
            .order_by(Label.id.desc())
            .limit(self.settings.drift_reference_events)
        )
        points = list(self.session.scalars(stmt))
        mean, found = self.mean_vector(kind, points)
        counts = {str(k): float(v) for k, v in (snapshot.get("per_label") or {}).items()}
        return Side(int(sum(counts.values())), counts, mean, found)


# --- per task -------------------------------------------------------------------------------


def measure(session: Session, *, store: VectorStore, settings: Settings) -> list[TaskDrift]:
    """The drift of every classification task, by name; reads only (no alert, no gauge)."""
    reader = _Reader(session, store, settings)
    active = {m.task: m for m in session.scalars(select(ModelVersion).where(ModelVersion.status == "active"))}
    return [_task_drift(reader, task.name, task.kind, active.get(task.name)) for task in list_tasks(session)]


def _task_drift(reader: _Reader, task: str, kind: str, version: ModelVersion | None) -> TaskDrift:
    least = reader.settings.drift_min_events
    if version is not None and (version.snapshot or {}).get("per_label"):
        reference, source = reader.trained(kind, task, version), f"model {version.version}"
        recent = reader.predicted(kind, task, latest=True)
    else:  # the stream against its own start: the first events are not also recent ones
        reference, source = reader.predicted(kind, task, latest=False), "first events"
        first = frozenset(row[0] for row in reader.events(kind, latest=False))
        recent = reader.predicted(kind, task, latest=True, exclude=first)
    if reference.events < least:
        source = "none"
    divergence = distance = None
    if min(recent.events, reference.events) >= least:
        if sum(recent.labels.values()) >= least and reference.labels:
            divergence = js_divergence(recent.labels, reference.labels)
        if recent.mean is not None and reference.mean is not None and min(recent.vectors, reference.vectors) >= least:
            distance = embedding_distance(recent.mean, reference.mean)
    return TaskDrift(
        task=task,
        kind=kind,
        reference=source,
        recent_events=recent.events,
        reference_events=reference.events,
        label_divergence=divergence,
        embedding_distance=distance,
        score=combined(divergence, distance),
        threshold=reader.settings.drift_threshold,
        recent_labels=_shares(recent.labels),
        reference_labels=_shares(reference.labels),
        window_start=recent.since,
        window_end=recent.until,
        event_ids=recent.event_ids,
    )


def _shares(counts: Mapping[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: round(v / total, 4) for k, v in sorted(counts.items())} if total else {}


def export(results: Sequence[TaskDrift], *, tenant: str, now: datetime) -> None:
    """Set a tenant's drift gauges in this process."""
    for r in results:
        metrics.set_drift(
            tenant,
            r.task,
            score=r.score,
            label_divergence=r.label_divergence,
            embedding_distance=r.embedding_distance,
            at=now.timestamp(),
        )


# --- the operational alert ------------------------------------------------------------------


def check(session: Session, *, store: VectorStore, settings: Settings, now: datetime) -> list[TaskDrift]:
    """Measure, export the gauges, and open, refresh or clear each task's model_drift alert."""
    results = measure(session, store=store, settings=settings)
    export(results, tenant=settings.tenant, now=now)
    for result in results:
        _keep_alert(session, result, settings=settings, now=now)
    session.flush()
    return results


def _keep_alert(session: Session, result: TaskDrift, *, settings: Settings, now: datetime) -> None:
    if result.score is None:  # nothing measured: leave an open alert as it is
        return
    alert = alerts.find_open(session, entity=result.task, rule=RULE)
    if alert is not None and result.drifting:
        alert.figures, alert.updated_at = result.figures(), now
        alert.window_start, alert.window_end = result.window_start or now, result.window_end or now
    elif alert is not None:
        alert.state, alert.closed_at, alert.updated_at = "cleared", now, now
        log.info("model drift of task %s cleared: score %.3f", result.task, result.score)
    elif result.drifting:
        _open(session, result, now=now, cooldown_s=settings.alert_cooldown_s)


def _open(session: Session, result: TaskDrift, *, now: datetime, cooldown_s: int) -> None:
    alert = Alert(
        entity=result.task,
        rule=RULE,
        severity=SEVERITY,
        state="open",
        window_start=result.window_start or now,
        window_end=result.window_end or now,
        figures=result.figures(),
        event_ids=result.event_ids,
        created_at=now,
        updated_at=now,
    )
    if alerts.open_alert(session, alert, cooldown_s=cooldown_s, now=now) is None:
        return
    log.warning(
        "model drift: task %s scores %.3f >= %.3f (labels %s, embedding %s, reference %s)",
        result.task,
        result.score,
        result.threshold,
        _round(result.label_divergence),
        _round(result.embedding_distance),
        result.reference,
    )
