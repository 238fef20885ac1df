"""Process a batch of events end to end: encode once per kind with the kind's served encoder,
classify with every task's head on the same vectors, run the kind's steps, upsert one call per
collection, and report an outcome per event. `prepare` does everything but the upserts and
`write` does those, so a caller may encode the next batch while the previous one is written.

A failure of one event (a poison event) fails that event only; a Transient error (database or
vector store down) propagates so the task retries the whole batch, which is safe because every
write is an upsert keyed by the event.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services import metrics
from services.classify.serving import ActiveModels, KindModel
from services.db.events import Outcome
from services.db.models import Event, as_utc
from services.embedding.encoder import Encoder
from services.errors import Transient
from services.vectors.base import VectorPoint, VectorStore

log = logging.getLogger(__name__)

# A kind-specific step sees a batch of one kind: the kind's served model, the events, their
# vectors and their head predictions; it returns, per event, what to merge into its predictions
# (FAQ suggestions for tickets, entity links for news come in as steps).
Step = Callable[[KindModel, Sequence[Event], np.ndarray, Sequence[dict[str, Any]]], list[dict[str, Any]]]


def text_to_embed(event: Event) -> str:
    """The title (when there is one) and the text, as one passage."""
    return f"{event.title}. {event.text}" if event.title else event.text


@dataclass(frozen=True)
class ToWrite:
    """An event's point and the outcome it gets once the point is written."""

    event: Event
    point: VectorPoint
    outcome: Outcome


@dataclass
class Prepared:
    """A batch encoded and classified, its points not yet written: the outcomes so far (the events
    that failed to encode or in a step) and the points to write, by collection."""

    events: list[Event]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    points: dict[str, list[ToWrite]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        """The batch's event ids, in order."""
        return [event.id for event in self.events]


@dataclass
class Pipeline:
    """The per-process pipeline: the served models, one vector store, the steps for each kind."""

    models: ActiveModels
    store: VectorStore
    steps: Mapping[str, Sequence[Step]] = field(default_factory=dict)

    def process(self, events: Sequence[Event], *, now: datetime) -> list[Outcome]:
        """Outcomes for events, in order; raises Transient when a dependency is down."""
        return self.write(self.prepare(events, now=now))

    def prepare(self, events: Sequence[Event], *, now: datetime) -> Prepared:
        """Encode, classify and run the steps; no write yet. Raises Transient when a dependency is down."""
        metrics.BATCH_SIZE.observe(len(events))
        prepared = Prepared(list(events))
        by_kind: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_kind[event.kind].append(event)
        for kind, group in by_kind.items():
            self._process_kind(self.models.for_kind(kind), group, prepared, now=now)
        return prepared

    def write(self, prepared: Prepared) -> list[Outcome]:
        """Upsert a prepared batch's points (one call per collection; flushed when it returns) and
        return its outcomes in order: an event is ok only once its point is written."""
        for collection, points in prepared.points.items():
            if points:
                self._upsert(collection, points, prepared.outcomes)
        return [prepared.outcomes[event.id] for event in prepared.events]

    def drop_points(self, events: Sequence[Event]) -> None:
        """Delete the points of events whose rows were deleted while they were being processed."""
        by_collection: dict[str, list[str]] = defaultdict(list)
        for event in events:
            by_collection[self.models.for_kind(event.kind).collection].append(event.point_id)
        for collection, point_ids in by_collection.items():
            self.store.delete(collection, point_ids)

    def _process_kind(self, model: KindModel, events: Sequence[Event], prepared: Prepared, *, now: datetime) -> None:
        outcomes = prepared.outcomes
        vectors = self._encode(model.encoder, events, outcomes)
        encoded = [event for event in events if event.id in vectors]
        if not encoded:
            return
        matrix = np.stack([vectors[event.id] for event in encoded])
        predictions = model.predict(matrix)
        self._run_steps(model, encoded, matrix, predictions, outcomes)
        points = prepared.points.setdefault(model.collection, [])
        version = model.encoder.version
        for event, predicted in zip(encoded, predictions, strict=True):
            if event.id in outcomes:  # failed in a step
                continue
            payload = event_payload(event, predicted, now=now, encoder_version=version)
            point = VectorPoint(event.point_id, vectors[event.id].tolist(), payload)
            points.append(ToWrite(event, point, Outcome(event.id, True, predicted, version, event.content_hash)))

    def _encode(self, encoder: Encoder, events: Sequence[Event], outcomes: dict[str, Outcome]) -> dict[str, np.ndarray]:
        texts = [text_to_embed(event) for event in events]
        try:
            matrix = encoder.encode(texts)
            return {event.id: matrix[i] for i, event in enumerate(events)}
        except Transient:
            raise
        except Exception:
            log.exception("batch encode failed; encoding events one by one to find the poison")
        vectors: dict[str, np.ndarray] = {}
        for event, text in zip(events, texts, strict=True):
            try:
                vectors[event.id] = encoder.encode([text])[0]
            except Exception as exc:
                outcomes[event.id] = _failed(event, "encode", exc)
        return vectors

    def _run_steps(
        self,
        model: KindModel,
        events: Sequence[Event],
        matrix: np.ndarray,
        predictions: list[dict[str, Any]],
        outcomes: dict[str, Outcome],
    ) -> None:
        """Merge each step's output into the predictions; when a step fails on the batch, it runs
        event by event so a poison event fails alone."""
        for step in self.steps.get(model.kind, ()):
            try:
                for predicted, extra in zip(predictions, step(model, events, matrix, predictions), strict=True):
                    predicted.update(extra)
                continue
            except Transient:
                raise
            except Exception:
                log.exception("a %s step failed on a batch; running it event by event", model.kind)
            for i, event in enumerate(events):
                if event.id in outcomes:
                    continue
                try:
                    predictions[i].update(step(model, [event], matrix[i : i + 1], [predictions[i]])[0])
                except Transient:
                    raise
                except Exception as exc:  # a poison event must not block its batch
                    outcomes[event.id] = _failed(event, "step", exc)

    def _upsert(self, collection: str, points: Sequence[ToWrite], outcomes: dict[str, Outcome]) -> None:
        """Write the points; each event's outcome is ok once its point is written, failed when its
        point alone cannot be (a poison point must not block its batch)."""
        try:
            self.store.upsert(collection, [p.point for p in points])
            outcomes.update((p.event.id, p.outcome) for p in points)
            _log_upserted(collection, [p.event.id for p in points])
            return
        except Transient:
            raise
        except Exception:
            log.exception("batch upsert to %s failed; upserting points one by one", collection)
        for p in points:
            try:
                self.store.upsert(collection, [p.point])
                outcomes[p.event.id] = p.outcome
            except Transient:
                raise
            except Exception as exc:
                outcomes[p.event.id] = _failed(p.event, "upsert", exc)
        _log_upserted(collection, [p.event.id for p in points if outcomes[p.event.id].ok])


def event_payload(
    event: Event, predictions: Mapping[str, Any], *, now: datetime, encoder_version: str
) -> dict[str, Any]:
    """The Qdrant payload of an event: what searches return and filter on."""
    return {
        "event_id": event.id,
        "kind": event.kind,
        "title": event.title,
        "text": event.text,
        "metadata": event.meta,
        "entities": event.entities,
        "predictions": dict(predictions),
        "model_version": encoder_version,
        "occurred_at": _iso(event.occurred_at),
        "published_at": published_at(event),
        "received_at": _iso(event.received_at),
        "processed_at": now.isoformat(),
    }


def published_at(event: Event) -> str | None:
    """When an item was published: metadata.published_at when it is an ISO-8601 time, else when
    the event occurred (for feeds' freshness and date filters)."""
    declared = (event.meta or {}).get("published_at")
    if isinstance(declared, str):
        try:
            parsed = datetime.fromisoformat(declared)
        except ValueError:
            parsed = None
        if parsed is not None:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return _iso(event.occurred_at)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


def _log_upserted(collection: str, event_ids: list[str]) -> None:
    log.info(
        "upserted %d points to %s", len(event_ids), collection, extra={"event_ids": event_ids, "collection": collection}
    )


def _failed(event: Event, stage: str, exc: BaseException) -> Outcome:
    log.warning("event %s failed at %s: %s", event.id, stage, exc, extra={"event_id": event.id})
    error = f"{stage}: {type(exc).__name__}: {exc}"[:2000]
    return Outcome(event.id, False, {}, None, event.content_hash, error=error)
