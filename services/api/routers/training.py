"""Training runs and the model registry: POST/GET /v1/training/runs, GET /v1/models,
POST /v1/models/{version}/activate (rollback)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.api import errors
from services.api.deps import RuntimeDep, SessionDep
from services.db import browse
from services.db.models import ModelVersion, ReindexJob, TrainingRun, as_utc
from services.enqueue import send
from services.recommend.learned import TASK as RECOMMEND
from services.task_names import REINDEX, TRAIN_RUN
from services.training import registry, runs

router = APIRouter(prefix="/v1", tags=["training"])


class RunIn(BaseModel):
    """Which task to train."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=64)


class RunCreated(BaseModel):
    """The queued run."""

    run_id: str


class RunOut(BaseModel):
    """A run's state; metrics and model_version once it succeeded."""

    run_id: str
    task: str
    status: str
    stage: str
    progress: float
    metrics: dict[str, Any]
    promoted: bool
    model_version: str | None
    error: str | None
    label_count: int
    created_at: datetime
    finished_at: datetime | None


class RunList(BaseModel):
    """Training runs, newest first."""

    runs: list[RunOut]


class VersionOut(BaseModel):
    """A model version in the registry."""

    version: str
    task: str
    kind: str
    status: str
    active: bool
    encoder_version: str
    metrics: dict[str, Any]
    snapshot: dict[str, Any]
    artifact_path: str
    created_at: datetime
    activated_at: datetime | None


class ReindexOut(BaseModel):
    """A re-index job and how far it got."""

    id: int
    kind: str
    model_version: str
    collection: str
    status: str
    done: int
    total: int


class ModelsOut(BaseModel):
    """Model versions, newest first, and re-index jobs."""

    models: list[VersionOut]
    reindex: list[ReindexOut]


class Activated(BaseModel):
    """The result of an activation: active now, or after the re-index job."""

    version: str
    status: str
    reindex_job: int | None


def run_out(run: TrainingRun) -> RunOut:
    """The API form of a run."""
    return RunOut(
        run_id=run.id,
        task=run.task,
        status=run.status,
        stage=run.stage,
        progress=run.progress,
        metrics=run.metrics,
        promoted=run.promoted,
        model_version=run.model_version,
        error=run.error,
        label_count=run.label_count,
        created_at=as_utc(run.created_at),
        finished_at=as_utc(run.finished_at) if run.finished_at else None,
    )


@router.post("/training/runs", status_code=202, response_model=RunCreated, responses=errors.responses(404, 409))
def start_run(body: RunIn, request: Request, runtime: RuntimeDep) -> RunCreated:
    """Queue a training run of a task on the train queue."""
    with runtime.db.session_scope() as session:
        run_id = registry.new_run(session, task=body.task, trigger="api", others=[RECOMMEND]).id
    send(request.app.state.enqueuer_app, TRAIN_RUN, run_id, runtime.tenant)
    return RunCreated(run_id=run_id)


@router.get("/training/runs", response_model=RunList)
def list_runs(session: SessionDep, task: str | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> RunList:
    """The latest training runs, of one task or all, with their stage and progress."""
    rows = browse.training_runs(session, tasks=[task] if task else [], limit=limit)
    return RunList(runs=[run_out(r) for r in rows])


@router.get("/training/runs/{run_id}", response_model=RunOut)
def get_run(run_id: str, session: SessionDep) -> RunOut:
    """A run's status, stage and progress; metrics, promoted and model_version when it is done."""
    return run_out(registry.get_run(session, run_id=run_id))


@router.get("/models", response_model=ModelsOut)
def list_models(session: SessionDep, task: str | None = None) -> ModelsOut:
    """Model versions with their metrics, which one is active, and re-index jobs."""
    versions = [version_out(v) for v in registry.list_versions(session, task=task)]
    jobs = session.scalars(select(ReindexJob).order_by(ReindexJob.id.desc()).limit(20))
    reindex = [
        ReindexOut(
            id=j.id,
            kind=j.kind,
            model_version=j.model_version,
            collection=j.collection,
            status=j.status,
            done=j.done,
            total=j.total,
        )
        for j in jobs
    ]
    return ModelsOut(models=versions, reindex=reindex)


@router.post("/models/{version}/activate", response_model=Activated)
def activate(version: str, request: Request, runtime: RuntimeDep) -> Activated:
    """Make a version active (a rollback, or a candidate promoted by hand)."""
    with runtime.db.session_scope() as session:
        job = runs.activate(session, version=version, settings=runtime.settings)
        status = registry.get_version(session, version=version).status
    if job is not None:
        send(request.app.state.enqueuer_app, REINDEX, job, runtime.tenant)
    return Activated(version=version, status=status, reindex_job=job)


def version_out(v: ModelVersion) -> VersionOut:
    """The API form of a model version."""
    return VersionOut(
        version=v.version,
        task=v.task,
        kind=v.kind,
        status=v.status,
        active=v.status == "active",
        encoder_version=v.encoder_version,
        metrics=v.metrics,
        snapshot=v.snapshot,
        artifact_path=v.artifact_path,
        created_at=as_utc(v.created_at),
        activated_at=as_utc(v.activated_at) if v.activated_at else None,
    )
