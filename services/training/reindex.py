"""Re-indexing a kind when its encoder changes: vectors of two encoders never share a collection.

1. start_job: a job row names the kind, the version that brings the encoder and a new collection.
   Until the switch, workers keep embedding with the old encoder into the old collection, and
   searches keep reading the old collection (the kind's alias in kind_encoders).
2. step: pages of done events, in id order after the job's cursor, are embedded with the new
   encoder and upserted into the new collection; the cursor is committed after every page, so a
   crash resumes where it stopped (a page may be embedded twice: upserts are idempotent).
3. At the end, one transaction points the kind's alias at the new collection and activates the
   version. Workers pick it up within SIFT_MODEL_RELOAD_S.
   For the ticket kind, the FAQ base is embedded into the new collection's FAQ collection
   just before the switch.
4. Catch-up: events processed since the job started by a worker still on the old encoder are
   re-embedded (events.model_version says which encoder made each stored vector), and so are
   FAQ entries written since the job started. The beat's
   re-index sweep repeats it for an hour after the switch, so a batch in flight at the switch
   is covered too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from services.classify.serving import ActiveModels, versioned_collection
from services.config import Settings
from services.db.models import Event, KindEncoder, ModelVersion, ReindexJob
from services.embedding.encoder import model_version
from services.errors import NotFound
from services.events.pipeline import event_payload, text_to_embed
from services.memo import Listeners
from services.task_names import REINDEX, Sender
from services.training.registry import encoder_path, switch_active
from services.vectors.base import VectorPoint, VectorStore
from services.vectors.schema import collection_for, payload_indexes

log = logging.getLogger(__name__)
CATCH_UP_FOR = timedelta(hours=1)
# Told, in this process, of the points each re-embedding wrote (collection, point ids), weakly held:
# the feeds' item cache forgets them, as it forgets an item a batch records done.
_written_listeners: Listeners[[str, list[str]]] = Listeners()


def on_written(listener: Callable[[str, list[str]], None]) -> None:
    """Call the bound method listener(collection, point_ids) after each page of points is re-embedded."""
    _written_listeners.add(listener)


def current_encoder(session: Session, *, kind: str, settings: Settings) -> str:
    """The encoder version a kind is embedded with now (the base model until a switch)."""
    row = session.get(KindEncoder, kind)
    return row.encoder_version if row else model_version(settings.model_path)


def start_job(session: Session, *, version: ModelVersion, settings: Settings) -> int:
    """A job that moves version.kind onto version's encoder; an older running job of the kind is
    cancelled (its version goes back to candidate)."""

    now = datetime.now(UTC)
    for old in session.scalars(
        select(ReindexJob).where(ReindexJob.kind == version.kind, ReindexJob.status == "running")
    ):
        old.status = "cancelled"
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.version == old.model_version, ModelVersion.status == "reindexing")
            .values(status="candidate")
        )
    prefix = settings.tenant_prefix
    if encoder_path(version.artifact_path) is not None:
        collection = versioned_collection(version.kind, version.version, prefix=prefix)
    else:
        collection = collection_for(version.kind, prefix=prefix)
    stored = select(func.count()).select_from(Event).where(Event.kind == version.kind, Event.status == "done")
    total = session.scalar(stored) or 0
    job = ReindexJob(
        kind=version.kind,
        model_version=version.version,
        collection=collection,
        status="running",
        cursor="",
        done=0,
        total=int(total),
        started_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    log.info("re-index job %s: %s onto %s (%d events)", job.id, version.kind, collection, total)
    return job.id


def get_job(session: Session, *, job_id: int) -> ReindexJob:
    """A job by id, or NotFound."""
    job = session.get(ReindexJob, job_id)
    if job is None:
        raise NotFound(f"no re-index job {job_id}")
    return job


# Data of another product that lives in a kind's vector space and moves with it to a new encoder
# (the FAQ base with tickets): companion(encoder, kind collection, since) re-embeds it (all of it,
# or what was written since a moment) next to the new collection and returns how many points.
Companion = Callable[[Any, str, datetime | None], int]


class Reindexer:
    """Runs re-index jobs in bounded steps (a task re-sends itself until the job is done).

    companions: per kind, what else is re-embedded with its events; after_switch: per kind, the
    task sent (with the tenant) once the kind's encoder has changed (matching recalibrates)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Callable[[], Any],
        store: VectorStore,
        models: ActiveModels,
        companions: Mapping[str, Companion] | None = None,
        after_switch: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.models = models
        self.companions = companions or {}
        self.after_switch = after_switch or {}

    def run_step(self, job_id: int, *, send: Sender, max_seconds: float = 20.0) -> str:
        """One step of a job, then what follows: the next step while it runs, the kind's
        after-switch task once it switched. Returns the job's status."""
        status = self.step(job_id, max_seconds=max_seconds)
        if status == "running":
            send(REINDEX, job_id, self.settings.tenant)
        elif status == "switched":
            with self.sessions() as session:
                kind = get_job(session, job_id=job_id).kind
            if kind in self.after_switch:
                send(self.after_switch[kind], self.settings.tenant)
        return status

    def step(self, job_id: int, *, max_seconds: float = 20.0, pages: int | None = None) -> str:
        """Embed pages until max_seconds (or `pages` pages) are spent; returns the job's status."""

        with self.sessions() as session:
            job = get_job(session, job_id=job_id)
            if job.status != "running":
                return job.status
            version = session.get(ModelVersion, job.model_version)
            if version is None:
                raise NotFound(f"re-index job {job_id} names unknown version {job.model_version!r}")
            kind, collection, cursor = job.kind, job.collection, job.cursor
            target = (version.encoder_version, encoder_path(version.artifact_path) or self.settings.model_path)
        encoder = self.models.encoder(*target)
        indexes = payload_indexes(self.settings.item_filter_fields)
        self.store.ensure_collection(collection, dimension=encoder.dimension, indexes=indexes)
        deadline = time.monotonic() + max_seconds
        done_pages = 0
        while time.monotonic() < deadline and (pages is None or done_pages < pages):
            with self.sessions() as session:
                batch = list(
                    session.scalars(
                        select(Event)
                        .where(Event.kind == kind, Event.status == "done", Event.id > cursor)
                        .order_by(Event.id)
                        .limit(self.settings.reindex_page)
                    )
                )
            if not batch:
                if kind in self.companions:
                    self.companions[kind](encoder, collection, None)
                self._switch(job_id)
                self.catch_up(job_id)
                return "switched"
            self._embed(batch, encoder, collection, record_version=False)
            cursor = batch[-1].id
            with self.sessions() as session:
                job = get_job(session, job_id=job_id)
                if job.status != "running":  # cancelled meanwhile
                    return job.status
                job.cursor, job.done, job.updated_at = cursor, job.done + len(batch), datetime.now(UTC)
            done_pages += 1
        return "running"

    def catch_up(self, job_id: int) -> int:
        """Re-embed events of the kind processed since the job started with another encoder."""

        with self.sessions() as session:
            job = get_job(session, job_id=job_id)
            version = session.get(ModelVersion, job.model_version)
            if job.status != "switched" or version is None:
                return 0
            kind, collection, started = job.kind, job.collection, job.started_at
            encoder_version = version.encoder_version
            path = encoder_path(version.artifact_path) or self.settings.model_path
        encoder = self.models.encoder(encoder_version, path)
        total = self.companions[kind](encoder, collection, started) if kind in self.companions else 0
        while True:
            with self.sessions() as session:
                batch = list(
                    session.scalars(
                        select(Event)
                        .where(
                            Event.kind == kind,
                            Event.status == "done",
                            Event.processed_at >= started,
                            Event.model_version != encoder_version,
                        )
                        .order_by(Event.id)
                        .limit(self.settings.reindex_page)
                    )
                )
            if not batch:
                return total
            self._embed(batch, encoder, collection, record_version=True)
            total += len(batch)

    def _embed(self, events: list[Event], encoder: Any, collection: str, *, record_version: bool) -> None:
        vectors = encoder.encode([text_to_embed(e) for e in events])
        now = datetime.now(UTC)
        points = [
            VectorPoint(
                e.point_id,
                vectors[i].tolist(),
                event_payload(e, e.predictions or {}, now=now, encoder_version=encoder.version),
            )
            for i, e in enumerate(events)
        ]
        self.store.upsert(collection, points)
        _written_listeners.tell(collection, [p.id for p in points])
        if record_version:
            with self.sessions() as session:
                session.execute(
                    update(Event)
                    .where(Event.id == bindparam("b_id"))
                    .values(model_version=encoder.version)
                    .execution_options(synchronize_session=False),
                    [{"b_id": e.id} for e in events],
                )

    def _switch(self, job_id: int) -> None:

        with self.sessions() as session:
            job = get_job(session, job_id=job_id)
            version = session.get(ModelVersion, job.model_version)
            assert version is not None
            now = datetime.now(UTC)
            row = session.get(KindEncoder, job.kind)
            path = encoder_path(version.artifact_path)
            if row is None:
                row = KindEncoder(
                    kind=job.kind,
                    encoder_version=version.encoder_version,
                    encoder_path=path,
                    collection=job.collection,
                    updated_at=now,
                )
                session.add(row)
            else:
                row.encoder_version, row.encoder_path, row.collection, row.updated_at = (
                    version.encoder_version,
                    path,
                    job.collection,
                    now,
                )
            switch_active(session, version=version)
            job.status, job.switched_at = "switched", now
        log.info("re-index job %s switched %s to %s", job_id, job.kind, job.collection)
        self.models.refresh(force=True)


def jobs_to_resume(session: Session, *, now: datetime, stalled_after_s: float = 120) -> tuple[list[int], list[int]]:
    """(running jobs whose chain of steps stopped, e.g. with a dead worker; switched jobs still
    in their catch-up hour)."""
    running = list(
        session.scalars(
            select(ReindexJob.id).where(
                ReindexJob.status == "running", ReindexJob.updated_at < now - timedelta(seconds=stalled_after_s)
            )
        )
    )
    recent = list(
        session.scalars(
            select(ReindexJob.id).where(ReindexJob.status == "switched", ReindexJob.switched_at >= now - CATCH_UP_FOR)
        )
    )
    return running, recent
