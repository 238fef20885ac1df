"""Training runs: snapshot a task's labels, split a holdout, fit a head (and, when there are
enough labels, fine-tune the kind's encoder with sentence-transformers), evaluate, and promote
the new version only when it beats the active one scored the same way (on the same holdout, or,
with few labels, by the same k folds of every label: services/training/estimate.py).

A run is a row in training_runs; its result is a row in model_versions (the registry) and a
folder under SIFT_DATA_DIR/models/<version> with head.npz, meta.json and, when fine-tuned, the
encoder. Promoting a version that brings a new encoder does not activate it at once: a re-index
job (services/training/reindex.py) embeds the kind's events into a new collection first and switches the
kind's alias and the active version in one transaction at the end.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.classify.head import Head
from services.classify.serving import ActiveModels
from services.classify.tasks import get_task, label_defs
from services.config import Settings
from services.db.models import Event, Label, ModelVersion, TrainingRun
from services.embedding.encoder import Encoder
from services.errors import Conflict, InvalidInput, NotFound
from services.task_names import REINDEX, Sender
from services.training import labels as label_repo
from services.training import lease
from services.training.dataset import (
    MIN_EXAMPLES_PER_LABEL,
    Example,
    Snapshot,
    few_per_label,
    take_snapshot,
    with_label_descriptions,
)
from services.training.estimate import estimate_method, holdout_scorer, kfold_scorer, split_for_run
from services.training.heads import train_head
from services.training.registry import encoder_path, get_run, switch_active
from services.training.reindex import current_encoder, start_job
from services.training.tuning import Progress, fine_tuned

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a run produced."""

    version: str
    promoted: bool
    metrics: dict[str, Any]
    reindex_job: int | None = None
    notes: list[str] = field(default_factory=list)
    kind: str = ""


@dataclass
class _Fitted:
    """A new version's encoder and head, before it is judged."""

    encoder: Encoder
    head: Head
    tuned_path: str | None
    metrics: dict[str, Any]
    notes: list[str]


class TaskTrainer(Protocol):
    """Runs of a task that is not a classifier (the recommender's): the runtime hands them in."""

    task: str

    def execute(self, run_id: str, *, progress: Progress | None = None) -> Outcome:
        """Run a queued run of the task to the end."""
        ...

    def due(self, session: Session) -> bool:
        """True when enough new data arrived for the beat to start a run."""
        ...


def _check_trainable(task: str, snap: Snapshot) -> None:
    counts = Counter(e.label for e in snap.examples)
    usable = [label for label, n in counts.items() if n >= MIN_EXAMPLES_PER_LABEL]
    if len(usable) < 2:
        raise InvalidInput(
            f"task {task!r} needs at least 2 labels with {MIN_EXAMPLES_PER_LABEL}+ examples each to train; "
            f"it has {dict(counts)}"
        )


class Trainer:
    """Executes runs. Needs the database, the base encoder path and the served models (to
    evaluate the active version on the new holdout)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Callable[[], Any],
        models: ActiveModels,
        device: str,
        after_switch: Mapping[str, str] | None = None,
        others: Sequence[TaskTrainer] = (),
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.models = models
        self.device = device
        self.after_switch = after_switch or {}
        self.others = {other.task: other for other in others}

    def run(self, run_id: str, *, send: Sender, progress: Progress | None = None) -> Outcome:
        """Execute a run, then send what follows: the re-index of a promotion that brings its own
        encoder, or, when a promotion switched a head at once, the kind's after-switch task
        (a new intent head changes match scores: matching recalibrates)."""
        outcome = self.execute(run_id, progress=progress)
        if outcome.reindex_job is not None:
            send(REINDEX, outcome.reindex_job, self.settings.tenant)
        elif outcome.promoted and outcome.kind in self.after_switch:
            send(self.after_switch[outcome.kind], self.settings.tenant)
        return outcome

    def execute(self, run_id: str, *, progress: Progress | None = None) -> Outcome:
        """Run a queued run to the end; the run row says succeeded or failed (with the error).
        It ends within SIFT_TRAIN_BUDGET_S of now (the fine-tuning takes what the rest leaves)."""
        deadline = time.monotonic() + self.settings.train_budget_s
        started = datetime.now(UTC)
        with self.sessions() as session:
            run = get_run(session, run_id=run_id)
            other = self.others.get(run.task)
        if other is not None:
            return other.execute(run_id, progress=progress)
        with self.sessions() as session:
            run = get_run(session, run_id=run_id)
            if run.status in ("succeeded", "failed"):
                raise Conflict(f"run {run_id} already {run.status}")
            if not lease.take(session, run_id=run_id, now=started):
                # A re-delivered or duplicate message: the run trains elsewhere, under a live lease.
                log.warning(
                    "training run %s is running under %s's live lease; not trained again", run_id, run.lease_holder
                )
                return Outcome(version="", promoted=False, metrics={}, notes=["running elsewhere"])
            run.stage = "snapshot"
            task = get_task(session, run.task)
            task_name, kind, fine_tune_allowed = task.name, task.kind, task.fine_tune
            descriptions = {d.name: d.description for d in label_defs(task)}
            snap = take_snapshot(session, task=task_name)
            run.label_count, run.max_label_id = len(snap.examples), snap.max_label_id
        report = self._reporter(run_id, progress)
        return lease.run_to_end(
            self.sessions,
            run_id=run_id,
            task=task_name,
            train=lambda: self._train(run_id, task_name, kind, fine_tune_allowed, snap, descriptions, report, deadline),
        )

    def _reporter(self, run_id: str, progress: Progress | None) -> Progress:
        last = [0.0]

        def report(stage: str, fraction: float) -> None:
            if progress is not None:
                progress(stage, fraction)
            now = time.monotonic()
            if now - last[0] < 2.0 and fraction < 1.0:
                return
            last[0] = now
            with self.sessions() as session:
                session.execute(
                    update(TrainingRun).where(TrainingRun.id == run_id).values(stage=stage, progress=round(fraction, 4))
                )

        return report

    def _train(
        self,
        run_id: str,
        task: str,
        kind: str,
        fine_tune_allowed: bool,
        snap: Snapshot,
        descriptions: dict[str, str],
        report: Progress,
        deadline: float,
    ) -> Outcome:
        s = self.settings
        _check_trainable(task, snap)
        train, holdout, kfold = split_for_run(snap.examples, s)  # few labels: all train, k-fold estimate
        report("split", 1.0)
        version = f"{task}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        out_dir = s.models_dir / version
        out_dir.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        metrics: dict[str, Any] = {"train": len(train), "holdout": len(holdout)}
        t0 = time.monotonic()
        judged = 2 * len(train) if kfold else 2 * len(holdout)  # texts the judgement encodes, both versions
        fitted = self._fit(task, kind, fine_tune_allowed, train, judged, descriptions, out_dir, report, deadline)
        encoder, head, tuned_path = fitted.encoder, fitted.head, fitted.tuned_path
        metrics.update(fitted.metrics)
        notes += fitted.notes
        metrics["train_seconds"] = round(time.monotonic() - t0, 1)
        report("evaluate", 0.0)
        metrics["estimate"] = estimate_method(kfold, s.train_kfold, fine_tuned=tuned_path is not None)
        score = kfold_scorer(train, s.train_kfold) if kfold else holdout_scorer(holdout)
        promoted = self._judge(task, kind, head, encoder, score, metrics, notes)
        head.save(out_dir)
        meta = {
            "version": version,
            "task": task,
            "kind": kind,
            "labels": list(head.labels),
            "metrics": metrics,
            "snapshot": snap.summary(),
            "encoder": tuned_path or "serving",
        }
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
        reindex_job = self._register(version, task, kind, head, encoder, out_dir, snap, metrics, promoted)
        report("done", 1.0)
        metrics["notes"] = notes
        return Outcome(version, promoted, metrics, reindex_job, notes, kind)

    def _fit(
        self,
        task: str,
        kind: str,
        fine_tune_allowed: bool,
        train: list[Example],
        judged: int,
        descriptions: dict[str, str],
        out_dir: Path,
        report: Progress,
        deadline: float,
    ) -> _Fitted:
        """The new version's encoder and head: fine-tuned when the task allows it and has enough
        people's labels, else a head on the serving encoder."""
        s = self.settings
        unlabeled = self._unlabeled(kind, task) if few_per_label(train, s.train_pseudo_below) else []
        enough_to_fine_tune = len(train) >= s.train_fine_tune_min_labels  # people's labels, not descriptions
        examples = with_label_descriptions(train, descriptions, s)
        metrics: dict[str, Any] = {"description_examples": len(examples) - len(train), "unlabeled_pool": len(unlabeled)}
        if fine_tune_allowed and enough_to_fine_tune:
            encoder, head, metrics["fine_tune"] = fine_tuned(
                examples,
                unlabeled=unlabeled,
                out_dir=out_dir,
                settings=s,
                device=self.device,
                progress=report,
                deadline=deadline,
                after_texts=judged,
            )
            encoder.version = out_dir.name
            metrics["pseudo_labels_kept"] = metrics["fine_tune"]["pseudo_labeled"]
            return _Fitted(encoder, head, str(out_dir / "encoder"), metrics, [])
        notes = []
        if fine_tune_allowed:
            notes.append(f"head only: {len(train)} training labels < SIFT_TRAIN_FINE_TUNE_MIN_LABELS")
        encoder = self.models.for_kind(kind).encoder
        report("head", 0.0)
        head, metrics["head_pseudo_labeled"] = train_head(encoder.encode, examples, unlabeled=unlabeled, settings=s)
        metrics["pseudo_labels_kept"] = metrics["head_pseudo_labeled"]
        return _Fitted(encoder, head, None, metrics, notes)

    def _judge(
        self,
        task: str,
        kind: str,
        head: Head,
        encoder: Encoder,
        score: Callable[[Encoder, Head], dict[str, Any]],
        metrics: dict[str, Any],
        notes: list[str],
    ) -> bool:
        """Score the new version and the serving one the same way (the holdout, or the same k folds
        of every label: services/training/estimate.py) into metrics; True if the new one wins."""
        new = score(encoder, head)
        baseline_version, baseline = self._baseline(task, kind, score)
        metrics.update(new)
        metrics["baseline"] = {"version": baseline_version, **baseline}
        # Against an active version the new one must win by the margin; at equal accuracy a trained
        # head beats zero-shot, and under k-fold (whose folds fit their own heads) a head on the
        # active version's own encoder wins: it learned from the labels in force.
        same_encoder = "folds" in new and baseline.get("encoder") == encoder.version
        margin = self.settings.train_promote_margin if baseline_version and not same_encoder else 0.0
        promoted = bool(new["accuracy"] >= baseline["accuracy"] + margin)
        if not promoted:
            against = baseline_version or "zero-shot"
            notes.append(
                f"not promoted: accuracy {new['accuracy']} < {against} {baseline['accuracy']} + margin {margin}"
            )
        return promoted

    def _register(
        self,
        version: str,
        task: str,
        kind: str,
        head: Head,
        encoder: Encoder,
        out_dir: Path,
        snap: Snapshot,
        metrics: dict[str, Any],
        promoted: bool,
    ) -> int | None:
        """Add the version to the registry, active (or re-indexing) when promoted, else rejected;
        returns the re-index job a promotion started, if any."""
        with self.sessions() as session:
            row = ModelVersion(
                version=version,
                task=task,
                kind=kind,
                status="candidate",
                encoder_version=encoder.version,
                artifact_path=str(out_dir),
                labels=list(head.labels),
                snapshot=snap.summary(),
                metrics=metrics,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.flush()
            if promoted:
                return activate(session, version=version, settings=self.settings)
            row.status = "rejected"
            return None

    def _unlabeled(self, kind: str, task: str) -> list[str]:
        """Texts of the kind's events that carry no label of the task (up to SIFT_TRAIN_PSEUDO_MAX): no
        label row at all, superseded or rejected ones included, by event or by text, whether the
        event was ingested or made by a label posted with its text."""
        labeled_ids = select(Label.event_id).where(Label.task == task)
        with self.sessions() as session:
            labeled = set(session.scalars(select(Label.text).where(Label.task == task)))
            rows = session.scalars(
                select(Event)
                .where(Event.kind == kind, Event.id.not_in(labeled_ids))
                .order_by(Event.id)
                .limit(self.settings.train_pseudo_max + len(labeled))
            )
            texts = [label_repo.text_of(row) for row in rows]
        return list(dict.fromkeys(t for t in texts if t not in labeled))[: self.settings.train_pseudo_max]

    def _baseline(
        self, task: str, kind: str, score: Callable[[Encoder, Head], dict[str, Any]]
    ) -> tuple[str | None, dict[str, Any]]:
        """The active version of the task (or its zero-shot head) scored as the new one is."""
        with self.sessions() as session:
            active = session.scalar(
                select(ModelVersion).where(ModelVersion.task == task, ModelVersion.status == "active")
            )
            active_info = (active.version, active.encoder_version, active.artifact_path) if active else None
        if active_info is not None:
            version, encoder_version, path = active_info
            encoder = self.models.encoder(encoder_version, encoder_path(path))
            return version, {**score(encoder, Head.load(Path(path))), "encoder": encoder_version}
        serving = self.models.for_kind(kind)
        for name, head, _, _ in serving.heads:
            if name == task:  # zero-shot: a trained head must beat it
                return None, {**score(serving.encoder, head), "encoder": serving.encoder.version}
        return None, {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}


def activate(session: Session, *, version: str, settings: Settings) -> int | None:
    """Make a version the active one of its task (promotion or rollback). When it needs another
    encoder than the one the kind is embedded with now, start a re-index job and return its id:
    the switch happens when the job is done. Otherwise switch now and return None."""
    row = session.get(ModelVersion, version)
    if row is None:
        raise NotFound(f"no model version {version!r}; see GET /v1/models")
    if row.status == "active":
        return None
    # A version with no encoder (the recommender's) switches at once.
    if not row.encoder_version or row.encoder_version == current_encoder(session, kind=row.kind, settings=settings):
        switch_active(session, version=row)
        return None
    row.status = "reindexing"
    return start_job(session, version=row, settings=settings)
