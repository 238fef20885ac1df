"""Classification: tasks, linear heads on the event embedding, and the models a process serves.

A task's head is a softmax over a linear map of the same L2-normalised vector the vector store
gets, so classifying a batch costs one matrix product after the one forward pass. Before a task
has a trained version, its head is zero-shot: the rows of the matrix are the embeddings of the
label descriptions, divided by a temperature (softmax of scaled cosine similarity).

Which encoder embeds a kind, which collection holds its vectors and which version is active for
each task live in SQL (kind_encoders, model_versions). ActiveModels reads them at most every
SIFT_MODEL_RELOAD_S and loads what changed, so a running worker picks up a promotion or a
rollback without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services import metrics
from services.config import EVENT_KINDS, Settings
from services.db.models import ClassTask, KindEncoder, ModelVersion
from services.embedding.encoder import Encoder
from services.errors import Conflict, InvalidInput, NotFound
from services.vectors.schema import collection_for

log = logging.getLogger(__name__)

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
LABEL_NAME = re.compile(r"^[^\s\x00-\x1f][^\x00-\x1f]{0,127}$")


# --- tasks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelDef:
    """A label of a task and the description its zero-shot head embeds."""

    name: str
    description: str


def describe(name: str) -> str:
    """The default description of a label: its name in words ("card_arrival" -> "card arrival")."""
    return re.sub(r"[_\-]+", " ", name).strip()


def label_defs(task: ClassTask) -> list[LabelDef]:
    """A task's labels, in their stored order."""
    return [LabelDef(item["name"], item.get("description") or describe(item["name"])) for item in task.labels]


def list_tasks(session: Session) -> list[ClassTask]:
    """Every task, by name."""
    return list(session.scalars(select(ClassTask).order_by(ClassTask.name)))


def get_task(session: Session, name: str) -> ClassTask:
    """A task by name, or NotFound."""
    task = session.get(ClassTask, name)
    if task is None:
        known = ", ".join(t.name for t in list_tasks(session)) or "none"
        raise NotFound(f"unknown task {name!r} (known tasks: {known})")
    return task


def add_task(
    session: Session,
    *,
    name: str,
    kind: str,
    labels: Sequence[LabelDef],
    open_labels: bool,
    fine_tune: bool = False,
    now: datetime | None = None,
) -> ClassTask:
    """Create a task; the same definition again is a no-op, a different one a Conflict."""
    if not TASK_NAME.match(name):
        raise InvalidInput(f"task name {name!r}: use 1-64 lowercase letters, digits or _, starting with a letter")
    if kind not in EVENT_KINDS:
        raise InvalidInput(f"kind {kind!r}: must be one of {', '.join(EVENT_KINDS)}")
    names = [label.name for label in labels]
    if len(set(names)) != len(names):
        raise InvalidInput(f"task {name!r}: label names must be unique")
    for label in names:
        _check_label_name(label)
    if not labels and not open_labels:
        raise InvalidInput(f"task {name!r}: give its labels, or set open_labels to take them from the data")
    stored = [{"name": label.name, "description": label.description} for label in labels]
    existing = session.get(ClassTask, name)
    if existing is not None:
        same = existing.kind == kind and existing.open_labels == open_labels and existing.labels == stored
        if same:
            return existing
        raise Conflict(f"task {name!r} exists with another definition; choose another name")
    if fine_tune and session.scalar(select(ClassTask).where(ClassTask.kind == kind, ClassTask.fine_tune)) is not None:
        raise Conflict(
            f"kind {kind!r} already has a task that fine-tunes its encoder; add this one with fine_tune false"
        )
    task = ClassTask(
        name=name,
        kind=kind,
        labels=stored,
        open_labels=open_labels,
        fine_tune=fine_tune,
        created_at=now or datetime.now(UTC),
    )
    session.add(task)
    session.flush()
    return task


def admit_labels(task: ClassTask, names: Iterable[str]) -> None:
    """Check label names against a task; an open task learns new names, a closed one refuses them."""
    known = {item["name"] for item in task.labels}
    new = []
    for name in names:
        _check_label_name(name)
        if name not in known:
            if not task.open_labels:
                raise InvalidInput(
                    f"label {name!r} is not one of task {task.name!r}'s labels: {', '.join(sorted(known))}"
                )
            known.add(name)
            new.append({"name": name, "description": describe(name)})
    if new:
        task.labels = [*task.labels, *new]  # a new list, so the JSON column is written


def _check_label_name(name: str) -> None:
    if not isinstance(name, str) or not LABEL_NAME.match(name) or name != name.strip():
        raise InvalidInput(f"label {name!r}: 1-128 printable characters, no leading or trailing space")


# --- heads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """softmax(x @ weights.T + bias) over labels."""

    labels: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray

    def probs(self, vectors: np.ndarray) -> np.ndarray:
        """Probabilities, one row per vector, one column per label."""
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return out

    def predict(self, vectors: np.ndarray) -> list[str]:
        """The most probable label of each vector."""
        return [self.labels[i] for i in self.probs(vectors).argmax(axis=1)]

    @classmethod
    def zero_shot(cls, labels: Sequence[str], description_vectors: np.ndarray, *, temperature: float) -> Head:
        """Scaled cosine similarity to each label's description (vectors are unit length)."""
        weights = np.asarray(description_vectors, dtype=np.float32) / temperature
        return cls(tuple(labels), weights, np.zeros(len(labels), dtype=np.float32))

    @classmethod
    def from_logistic(cls, labels: Sequence[str], coef: np.ndarray, intercept: np.ndarray) -> Head:
        """From a fitted multinomial logistic regression (a binary one has a single row)."""
        coef = np.asarray(coef, dtype=np.float32)
        intercept = np.asarray(intercept, dtype=np.float32)
        if len(labels) == 2 and coef.shape[0] == 1:
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
        return cls(tuple(labels), coef, intercept)

    def averaged_with(self, other: Head) -> Head:
        """One linear head whose logits are the mean of both heads' logits (its probabilities are
        the normalised geometric mean of theirs). Both must have the same labels in the same order."""
        if self.labels != other.labels:
            raise ValueError(f"heads over different labels: {self.labels} and {other.labels}")
        return Head(self.labels, (self.weights + other.weights) / 2, (self.bias + other.bias) / 2)

    def save(self, path: Path) -> None:
        """Write the head as head.npz under path."""
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "head.npz", labels=np.array(self.labels, dtype=object), weights=self.weights, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> Head:
        """Read head.npz from path."""
        with np.load(path / "head.npz", allow_pickle=True) as data:
            return cls(tuple(str(x) for x in data["labels"]), data["weights"], data["bias"])


def prediction(head: Head, probs: np.ndarray, *, version: str, zero_shot: bool) -> dict[str, Any]:
    """The stored form of one prediction: label, a probability per label, version, zero_shot."""
    best = int(probs.argmax())
    return {
        "label": head.labels[best],
        "probs": {label: round(float(p), 6) for label, p in zip(head.labels, probs, strict=True)},
        "model_version": version,
        "zero_shot": zero_shot,
    }


def versioned_collection(kind: str, model_version: str, *, prefix: str) -> str:
    """The collection of a kind embedded by a fine-tuned encoder."""
    tag = hashlib.sha1(model_version.encode()).hexdigest()[:10]
    return f"{collection_for(kind, prefix=prefix)}__{tag}"


# --- what a process serves ------------------------------------------------------------------


@dataclass(frozen=True)
class KindModel:
    """How one kind is embedded and classified right now."""

    kind: str
    encoder: Encoder
    collection: str
    heads: tuple[tuple[str, Head, str, bool], ...]  # (task, head, version, zero_shot)

    def predict(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        """Predictions of every task of the kind for each vector, one matrix product per task."""
        out: list[dict[str, Any]] = [{} for _ in range(len(vectors))]
        for task, head, version, zero_shot in self.heads:
            probs = head.probs(vectors)
            for row, p in zip(out, probs, strict=True):
                row[task] = prediction(head, p, version=version, zero_shot=zero_shot)
        return out


@dataclass(frozen=True)
class ServingState:
    """What SQL says should be served: per kind its encoder and collection, per task its version."""

    kinds: dict[str, tuple[str, str | None, str]]  # kind -> (encoder_version, encoder_path, collection)
    tasks: dict[str, tuple[str, tuple[tuple[str, str], ...]]]  # task -> (kind, ((label, description), ...))
    active: dict[str, tuple[str, str, str]]  # task -> (version, encoder_version, artifact_path)


def read_state(session: Session, *, base_version: str, prefix: str) -> ServingState:
    """The serving state, from three small queries."""
    kinds: dict[str, tuple[str, str | None, str]] = {
        kind: (base_version, None, collection_for(kind, prefix=prefix)) for kind in EVENT_KINDS
    }
    for row in session.scalars(select(KindEncoder)):
        kinds[row.kind] = (row.encoder_version, row.encoder_path, row.collection)
    tasks = {t.name: (t.kind, tuple((d.name, d.description) for d in label_defs(t))) for t in list_tasks(session)}
    active = {
        m.task: (m.version, m.encoder_version, m.artifact_path)
        for m in session.scalars(select(ModelVersion).where(ModelVersion.status == "active"))
    }
    return ServingState(kinds, tasks, active)


def served_rows(state: ServingState, kinds: dict[str, KindModel]) -> list[tuple[str, str, str, str]]:
    """(task, kind, version, encoder) of every task: its served head's version, or "none"."""
    versions = {task: version for model in kinds.values() for task, _, version, _ in model.heads}
    return [
        (task, kind, versions.get(task, "none"), kinds[kind].encoder.version if kind in kinds else "none")
        for task, (kind, _) in sorted(state.tasks.items())
    ]


class ActiveModels:
    """The encoders and heads this process serves, reloaded when SQL says they changed."""

    def __init__(
        self,
        *,
        settings: Settings,
        base: Encoder,
        sessions: Callable[[], Any],
        load_encoder: Callable[[str], Encoder],
    ) -> None:
        self.settings = settings
        self.base = base
        self._sessions = sessions
        self._load_encoder = load_encoder
        self._lock = threading.Lock()
        self._checked = 0.0
        self._state: ServingState | None = None
        self._kinds: dict[str, KindModel] = {}
        self._encoders: dict[str, Encoder] = {base.version: base}
        self._zero_shot: dict[tuple[str, str, tuple[tuple[str, str], ...]], Head] = {}

    def for_kind(self, kind: str) -> KindModel:
        """The encoder, collection and heads for a kind, reloading first when the check is due."""
        self.refresh()
        return self._kinds[kind]

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the serving state when SIFT_MODEL_RELOAD_S has passed; True when it changed."""
        now = time.monotonic()
        if not force and self._state is not None and now - self._checked < self.settings.model_reload_s:
            return False
        with self._lock:
            if not force and self._state is not None and now - self._checked < self.settings.model_reload_s:
                return False
            with self._sessions() as session:
                state = read_state(session, base_version=self.base.version, prefix=self.settings.tenant_prefix)
            self._checked = time.monotonic()
            if state == self._state:
                return False
            self._kinds = {kind: self._build(kind, state) for kind in EVENT_KINDS}
            metrics.set_served_models(self.settings.tenant, served_rows(state, self._kinds))
            if self._state is not None:
                log.info("serving models changed: %s", {k: [h[2] for h in m.heads] for k, m in self._kinds.items()})
            self._state = state
            return True

    def encoder(self, version: str, path: str | None) -> Encoder:
        """An encoder by version, loaded once per process."""
        if version not in self._encoders:
            if path is None:
                raise NotFound(f"encoder {version!r} has no path")
            self._encoders[version] = self._load_encoder(path)
            self._encoders[version].version = version
        return self._encoders[version]

    def _build(self, kind: str, state: ServingState) -> KindModel:
        encoder_version, encoder_path, collection = state.kinds[kind]
        encoder = self.encoder(encoder_version, encoder_path)
        heads: list[tuple[str, Head, str, bool]] = []
        for task, (task_kind, labels) in sorted(state.tasks.items()):
            if task_kind != kind:
                continue
            active = state.active.get(task)
            if active is not None and active[1] == encoder.version:
                heads.append((task, Head.load(Path(active[2])), active[0], False))
            elif labels:  # no usable trained head: zero-shot from the label descriptions
                heads.append((task, self._zero_shot_head(encoder, labels), f"zero-shot@{encoder.version}", True))
        return KindModel(kind, encoder, collection, tuple(heads))

    def _zero_shot_head(self, encoder: Encoder, labels: tuple[tuple[str, str], ...]) -> Head:
        key = (encoder.version, "", labels)
        if key not in self._zero_shot:
            vectors = encoder.encode([description for _, description in labels])
            temperature = self.settings.zero_shot_temperature
            self._zero_shot[key] = Head.zero_shot([name for name, _ in labels], vectors, temperature=temperature)
        return self._zero_shot[key]
