"""The `recommend` training run: the same loop as the classifiers' (services/training/runs.py),
on interactions instead of labels.

Snapshot every interaction; hold out each user's newest positive item (time-based) and, one step
earlier, a validation item. The learned model is fitted on what precedes the validation items and
the blend's weights are fitted on them; the model is then refitted on everything before the
held-out items and judged on them against the serving one (the active version, else the
hand-set blend) and the baselines. It is promoted only when its NDCG@10 is better. The version
is a registry row (task "recommend") with a folder under SIFT_DATA_DIR/models/<version>.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.classify.serving import ActiveModels
from services.config import Settings
from services.db.models import Event, Interaction, ModelVersion, TrainingRun, as_utc
from services.errors import Conflict, InvalidInput
from services.events.accept import point_id_for
from services.recommend import evaluation as ev
from services.recommend.interactions import ITEM_KINDS, Touch
from services.recommend.learned import TASK, Blend, Ease, fit_ease, fit_transitions, positive_sequences
from services.recommend.scoring import weights_from
from services.training import lease
from services.training.registry import get_run, switch_active, task_has_open_run
from services.training.runs import Outcome
from services.training.tuning import Progress
from services.vectors.base import VectorStore

log = logging.getLogger(__name__)
KIND = "item"  # the registry's kind of a recommend version: it serves product and news alike
NEGATIVES = 99


class RecommendTrainer:
    """Executes `recommend` runs; the classifiers' Trainer hands it the runs of its task."""

    task = TASK

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Callable[[], Any],
        store: Callable[[], VectorStore],
        models: ActiveModels,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self._store = store  # opened only when a run reads vectors: `sift train` of a classifier never opens it
        self.models = models

    @property
    def store(self) -> VectorStore:
        """The vector store, opened on first use (the embedded one belongs to the process that owns it)."""
        return self._store()

    def due(self, session: Session) -> bool:
        """True when SIFT_RECOMMEND_TRAIN_MIN_NEW_INTERACTIONS arrived since the last run's snapshot."""
        last = session.scalar(
            select(TrainingRun.label_count)
            .where(TrainingRun.task == TASK, TrainingRun.status == "succeeded")
            .order_by(TrainingRun.created_at.desc())
            .limit(1)
        )
        count = session.scalar(select(func.count()).select_from(Interaction)) or 0
        enough = count - (last or 0) >= self.settings.recommend_train_min_new_interactions
        return enough and not task_has_open_run(session, task=TASK)

    def execute(self, run_id: str, *, progress: Progress | None = None) -> Outcome:
        """Run a queued run to the end; the run row says succeeded or failed (with the error)."""
        report = progress or (lambda stage, fraction: None)
        with self.sessions() as session:
            run = get_run(session, run_id=run_id)
            if run.status in ("succeeded", "failed"):
                raise Conflict(f"run {run_id} already {run.status}")
            if not lease.take(session, run_id=run_id, now=datetime.now(UTC)):
                # A re-delivered or duplicate message: the run trains elsewhere, under a live lease.
                log.warning(
                    "training run %s is running under %s's live lease; not trained again", run_id, run.lease_holder
                )
                return Outcome(version="", promoted=False, metrics={}, notes=["running elsewhere"], kind=KIND)
            run.stage = "snapshot"
            histories, items, kinds = snapshot(session)
            run.label_count = sum(map(len, histories.values()))
        report("snapshot", 1.0)
        return lease.run_to_end(
            self.sessions, run_id=run_id, task=TASK, train=lambda: self._train(histories, items, kinds, report)
        )

    def _train(self, histories: ev.Histories, items: list[str], kinds: dict[str, str], report: Progress) -> Outcome:
        s = self.settings
        started = time.monotonic()
        weights = weights_from(s)
        test = ev.hold_out_last(histories)
        validation = ev.hold_out_last(test.before)
        negatives = min(NEGATIVES, len(items) // 2)
        if len(validation.target) < 2 or negatives < 5:
            raise InvalidInput(
                f"a recommend run needs 2+ users with 4+ items each and 10+ items; "
                f"there are {len(validation.target)} such users and {len(items)} items"
            )
        base = Blend(learned=1.0, content=0.0, cooccurrence=0.0, popularity=0.0)
        rows = ev.positives_by_user(validation.before, weights.type_weights)
        early = fit_ease(rows, max_items=s.recommend_learned_items, l2=s.recommend_learned_l2, blend=base)
        early.t = fit_transitions(positive_sequences(validation.before), early.index)
        report("validation", 0.3)
        lists = ev.candidates(validation, items, negatives=negatives, users=s.recommend_train_eval_users, seed=1)
        vectors = self._vectors({t.item_id for h in histories.values() for t in h}, lists, kinds)
        parts = ev.components(
            validation,
            lists,
            vectors=vectors,
            kinds=kinds,
            weights=weights,
            models={"new": early},
            window=s.recommend_pair_window,
        )
        blend, on_validation = ev.fit_blend(parts, learned="new", base=base)
        report("train", 0.5)
        rows = ev.positives_by_user(test.before, weights.type_weights)
        model = fit_ease(rows, max_items=s.recommend_learned_items, l2=s.recommend_learned_l2, blend=blend)
        model.t = fit_transitions(positive_sequences(test.before), model.index)
        train_seconds = time.monotonic() - started
        report("evaluate", 0.7)
        serving = self._serving()
        lists = ev.candidates(test, items, negatives=negatives, users=s.recommend_train_eval_users, seed=2)
        vectors.update(self._vectors(set(), lists, kinds))
        models = {"new": model, **({"serving": serving[1]} if serving else {})}
        parts = ev.components(
            test, lists, vectors=vectors, kinds=kinds, weights=weights, models=models, window=s.recommend_pair_window
        )
        metrics = judge(parts, blend=blend, weights=weights, serving=serving)
        metrics.update(
            validation=on_validation,
            weights=blend.as_dict(),
            interactions=sum(map(len, histories.values())),
            users=len(histories),
            items=len(model.item_ids),
            train_seconds=round(train_seconds, 1),
            seconds=round(time.monotonic() - started, 1),
        )
        return self._register(model, metrics)

    def _vectors(
        self, seen: set[str], lists: Mapping[str, list[str]], kinds: Mapping[str, str]
    ) -> dict[str, np.ndarray]:
        """Unit vectors of the interacted items and of the candidates, from the vector store."""
        wanted = seen | {i for ids in lists.values() for i in ids}
        out: dict[str, np.ndarray] = {}
        for kind in ITEM_KINDS:
            ids = sorted(i for i in wanted if kinds.get(i) == kind)
            collection = self.models.for_kind(kind).collection
            for start in range(0, len(ids), 1000):
                hits = self.store.retrieve(
                    collection,
                    [point_id_for(i, tenant=self.settings.tenant) for i in ids[start : start + 1000]],
                    with_vectors=True,
                )
                for h in hits:
                    if h.vector is not None:
                        v = np.asarray(h.vector, dtype=np.float32)
                        out[str(h.payload.get("event_id", h.id))] = v / (np.linalg.norm(v) or 1.0)
        return out

    def _serving(self) -> tuple[str, Ease] | None:
        with self.sessions() as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.task == TASK, ModelVersion.status == "active"))
            found = (row.version, row.artifact_path) if row else None
        if found is None:
            return None
        try:
            return found[0], Ease.load(Path(found[1]))
        except OSError:  # its folder is gone: judge against the hand-set blend
            log.warning("recommend version %s has no artifacts at %s", *found)
            return None

    def _register(self, model: Ease, metrics: dict[str, Any]) -> Outcome:
        version = f"{TASK}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        out_dir = self.settings.models_dir / version
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir)
        meta = {"version": version, "task": TASK, "kind": KIND, "metrics": metrics}
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
        promoted = bool(metrics["promote"])
        with self.sessions() as session:
            row = ModelVersion(
                version=version,
                task=TASK,
                kind=KIND,
                status="candidate",
                encoder_version="",  # none: activating it never waits for a re-index
                artifact_path=str(out_dir),
                labels=[],
                snapshot={"interactions": metrics["interactions"], "users": metrics["users"]},
                metrics=metrics,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.flush()
            if promoted:
                switch_active(session, version=row)
            else:
                row.status = "rejected"
        notes = [] if promoted else [str(metrics["why"])]
        return Outcome(version, promoted, metrics, None, notes, KIND)


def judge(
    parts: Mapping[str, np.ndarray], *, blend: Blend, weights: Any, serving: tuple[str, Ease] | None
) -> dict[str, Any]:
    """Metrics of the new blend, the learned model alone, the serving model and the baselines on
    the held-out items; promote when the new blend's NDCG@10 beats the serving one's."""
    hand_set = {"content": weights.content, "cooccurrence": weights.cooccurrence, "popularity": weights.popularity}
    scores = {
        "blend": ev.blended(parts, blend.as_dict(), "new"),
        "learned": ev.blended(parts, {"learned": 1.0, "transition": blend.transition}, "new"),
        "hand_set_blend": ev.blended(parts, hand_set, "new"),
        "popularity": parts["popularity"],
        "content": parts["content"],
    }
    if serving is not None:
        scores["serving"] = ev.blended(parts, serving[1].blend.as_dict(), "serving")
    out: dict[str, Any] = {name: ev.ranking_metrics(s) for name, s in scores.items()}
    out.update({"hr@10": out["blend"]["hr@10"], "ndcg@10": out["blend"]["ndcg@10"]})
    against = "serving" if serving is not None else "hand_set_blend"
    out["baseline"] = {"version": serving[0] if serving else None, **out[against]}
    out["promote"] = out["ndcg@10"] > out[against]["ndcg@10"]
    if not out["promote"]:
        out["why"] = f"not promoted: NDCG@10 {out['ndcg@10']} <= {against} {out[against]['ndcg@10']}"
    return out


def snapshot(session: Session) -> tuple[ev.Histories, list[str], dict[str, str]]:
    """Every user's interactions (newest first), the processed items and each item's kind."""
    rows = session.execute(
        select(Interaction.user_id, Interaction.item_id, Interaction.kind, Interaction.type, Interaction.ts).order_by(
            Interaction.user_id, Interaction.ts.desc(), Interaction.created_at.desc(), Interaction.id
        )
    )
    histories: ev.Histories = {}
    for r in rows:
        histories.setdefault(r.user_id, []).append(Touch(r.item_id, r.kind, r.type, as_utc(r.ts)))
    found = session.execute(select(Event.id, Event.kind).where(Event.kind.in_(ITEM_KINDS), Event.status == "done"))
    kinds = {r.id: r.kind for r in found}
    return histories, sorted(kinds), kinds
