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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services import metrics
from services.classify.head import Head, prediction
from services.classify.tasks import label_defs, list_tasks
from services.config import EVENT_KINDS, Settings
from services.db.models import KindEncoder, ModelVersion
from services.embedding.encoder import Encoder
from services.errors import NotFound
from services.vectors.schema import collection_for

log = logging.getLogger(__name__)


def versioned_collection(kind: str, model_version: str, *, prefix: str) -> str:
    """The collection of a kind embedded by a fine-tuned encoder."""
    tag = hashlib.sha1(model_version.encode()).hexdigest()[:10]
    return f"{collection_for(kind, prefix=prefix)}__{tag}"


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
