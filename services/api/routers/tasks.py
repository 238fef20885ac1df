"""GET /v1/tasks and POST /v1/tasks: classification tasks and their labels."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.api import errors
from services.api.deps import SessionDep
from services.classify import tasks
from services.db.models import ClassTask

router = APIRouter(prefix="/v1/tasks", tags=["classification"])


class LabelDefIn(BaseModel):
    """A label and (optionally) what it means, which the zero-shot head embeds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    description: str | None = Field(None, max_length=1000)


class TaskIn(BaseModel):
    """A new task: its name, the kind of event it labels, its labels (or open_labels)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="lowercase letters, digits and _")
    kind: str
    labels: list[LabelDefIn] = Field(default_factory=list, max_length=10_000)
    open_labels: bool = Field(False, description="learn new label names from the labels people give")
    fine_tune: bool = Field(False, description="let runs fine-tune the kind's encoder (one task per kind)")


class TaskOut(BaseModel):
    """A task as stored."""

    name: str
    kind: str
    labels: list[LabelDefIn]
    open_labels: bool
    fine_tune: bool


class TaskList(BaseModel):
    """Every task."""

    tasks: list[TaskOut]


def task_out(task: ClassTask) -> TaskOut:
    """The API form of a task."""
    labels = [LabelDefIn(name=d.name, description=d.description) for d in tasks.label_defs(task)]
    return TaskOut(
        name=task.name, kind=task.kind, labels=labels, open_labels=task.open_labels, fine_tune=task.fine_tune
    )


@router.get("", response_model=TaskList)
def list_tasks(session: SessionDep) -> TaskList:
    """Every task with its labels."""
    return TaskList(tasks=[task_out(t) for t in tasks.list_tasks(session)])


@router.post("", status_code=201, response_model=TaskOut, responses=errors.responses(409))
def add_task(body: TaskIn, session: SessionDep) -> TaskOut:
    """Add a task; sending the same definition again is a no-op."""
    labels = [tasks.LabelDef(x.name, x.description or tasks.describe(x.name)) for x in body.labels]
    task = tasks.add_task(
        session, name=body.name, kind=body.kind, labels=labels, open_labels=body.open_labels, fine_tune=body.fine_tune
    )
    return task_out(task)
