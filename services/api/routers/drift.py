"""GET /v1/drift: each task's drift against its reference, measured now (see services/alerts/drift.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.alerts import drift
from services.api.deps import RuntimeDep, SessionDep

router = APIRouter(prefix="/v1", tags=["models"])


class TaskDriftOut(BaseModel):
    """One task's drift: the score, its components, what it was measured against."""

    task: str
    kind: str
    score: float | None = Field(description="mean of the measured components, 0 to 1; null when none could be")
    label_divergence: float | None = Field(description="Jensen-Shannon divergence (base 2) of the label distributions")
    embedding_distance: float | None = Field(description="1 - cosine of the mean embeddings")
    threshold: float
    drifting: bool
    reference: str = Field(description='"model <version>" (its training snapshot), "first events", or "none"')
    recent_events: int
    reference_events: int
    recent_labels: dict[str, float]
    reference_labels: dict[str, float]


class DriftOut(BaseModel):
    """Every classification task's drift."""

    tasks: list[TaskDriftOut]


@router.get("/drift", response_model=DriftOut)
def get_drift(runtime: RuntimeDep, session: SessionDep) -> DriftOut:
    """Measure drift now and export the gauges; alerts are kept by the beat check, not here."""
    results = drift.measure(session, store=runtime.store, settings=runtime.settings)
    drift.export(results, tenant=runtime.tenant, now=datetime.now(UTC))
    return DriftOut(
        tasks=[
            TaskDriftOut(
                task=r.task,
                kind=r.kind,
                score=r.score,
                label_divergence=r.label_divergence,
                embedding_distance=r.embedding_distance,
                threshold=r.threshold,
                drifting=r.drifting,
                reference=r.reference,
                recent_events=r.recent_events,
                reference_events=r.reference_events,
                recent_labels=r.recent_labels,
                reference_labels=r.reference_labels,
            )
            for r in results
        ]
    )
