"""The ingest run as a pipeline, on a real SQLite database: one run drains the backlog in batches,
encoding each batch while the one before it is written; writes keep claim order; an event is
recorded done only after its point is written; a failed write marks nothing done and releases what
it had not written; the run ends only after its write in flight, leaving no thread behind.

The pipeline's encode stage is a stand-in with a known duration (the model's speed is not what is
tested here); its write stage is the real one, over a store that records, delays or fails upserts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from services.db import events as repo
from services.db.migrate import upgrade
from services.db.models import Event
from services.db.session import Database
from services.errors import VectorStoreUnavailable
from services.events import accept as ingest
from services.events.batch import BatchProcessor
from services.events.pipeline import Pipeline, Prepared, ToWrite
from services.vectors.base import VectorPoint
from tests.conftest import settings_for
from tests.recording import RecordingSender

STAGE_S = 0.4  # how long each stand-in encode and each write takes
LIMITS = ingest.Limits(max_events=1000, max_text_chars=10_000)


class Store:
    """Records each upsert (its event ids, its start and end) and the statuses its events had then;
    the upsert numbered `fail_at` (from 0) raises as an unreachable store would."""

    def __init__(self, db: Database, *, fail_at: int | None = None) -> None:
        self.db, self.fail_at = db, fail_at
        self.upserts: list[dict[str, Any]] = []

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        ids = sorted(p.payload["event_id"] for p in points)
        started = time.monotonic()
        with self.db.session_scope() as session:
            seen = {e.status for e in session.query(Event).filter(Event.id.in_(ids))}
        time.sleep(STAGE_S)
        if len(self.upserts) == self.fail_at:
            self.fail_at = None
            raise VectorStoreUnavailable("connection refused")
        self.upserts.append({"ids": ids, "start": started, "end": time.monotonic(), "statuses_then": seen})

    def delete(self, name: str, ids: Sequence[str]) -> None:
        raise AssertionError("no event was deleted meanwhile")


class StagedPipeline(Pipeline):
    """The real write stage; an encode stage that takes STAGE_S and may fail at batch `fail_at`."""

    def __init__(self, store: Store, *, fail_at: int | None = None) -> None:
        super().__init__(models=None, store=store)  # type: ignore[arg-type]
        self.fail_at = fail_at
        self.prepares: list[dict[str, Any]] = []

    def prepare(self, events: Sequence[Event], *, now: datetime) -> Prepared:
        started = time.monotonic()
        time.sleep(STAGE_S)
        if len(self.prepares) == self.fail_at:
            raise VectorStoreUnavailable("the FAQ collection is unreachable")
        self.prepares.append({"ids": sorted(e.id for e in events), "start": started})
        points = [
            ToWrite(
                e,
                VectorPoint(e.point_id, [1.0, 0.0], {"event_id": e.id}),
                repo.Outcome(e.id, True, {}, "stand-in@1", e.content_hash),
            )
            for e in events
        ]
        return Prepared(list(events), points={"sift_ticket": points})


@pytest.fixture
def db(data_dir: Path) -> Iterator[Database]:
    settings = settings_for(data_dir)
    upgrade(settings.sqlalchemy_url)
    database = Database(settings.sqlalchemy_url)
    yield database
    database.engine.dispose()


def processor(db: Database, pipeline: Pipeline, data_dir: Path, *, drain_s: float = 60.0) -> BatchProcessor:
    settings = settings_for(data_dir, batch_size=4, batch_drain_s=drain_s)
    return BatchProcessor(settings=settings, sessions=db.session_scope, pipeline=pipeline, follow_ups={})


def accept(db: Database, n: int) -> list[str]:
    events = [ingest.EventIn(id=f"t{i:02d}", kind="ticket", text=f"text {i}") for i in range(n)]  # type: ignore[arg-type]
    with db.session_scope() as session:
        return ingest.accept(session, events=events, limits=LIMITS).ids


def statuses(db: Database) -> dict[str, str]:
    with db.session_scope() as session:
        return {e.id: e.status for e in session.query(Event).all()}


def record_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sift-record")]


def test_one_run_drains_the_backlog_encoding_each_batch_while_the_one_before_is_written(
    db: Database, data_dir: Path
) -> None:
    ids = accept(db, 10)
    store = Store(db)
    pipeline = StagedPipeline(store)
    started = time.monotonic()
    assert processor(db, pipeline, data_dir).run(ids[:4], send=RecordingSender()) == {"done": 10, "failed": 0}
    elapsed = time.monotonic() - started
    assert set(statuses(db).values()) == {"done"}
    # three batches (4 + 4 + 2), written in the order they were claimed, each event once
    assert [p["ids"] for p in pipeline.prepares] == [u["ids"] for u in store.upserts]
    assert sorted(i for u in store.upserts for i in u["ids"]) == sorted(ids)
    assert pipeline.prepares[0]["ids"] == sorted(ids[:4])  # the message's own events come first
    # the next batch was encoding while the one before it was being written
    for previous, following in zip(store.upserts, pipeline.prepares[1:], strict=False):
        assert following["start"] < previous["end"] - STAGE_S / 2
    assert elapsed < 6 * STAGE_S  # sequential stages would take 6 (3 encodes, 3 writes), overlapped about 4
    # no event was done before its point was written, and nothing of the run's is left running
    assert all(u["statuses_then"] == {"processing"} for u in store.upserts)
    assert record_threads() == []
    # a re-delivered message is a no-op
    assert processor(db, pipeline, data_dir).run(ids[:4], send=RecordingSender()) == {"done": 0, "failed": 0}
    assert len(store.upserts) == 3


def test_a_failed_write_marks_nothing_done_and_releases_what_was_not_written(db: Database, data_dir: Path) -> None:
    ids = accept(db, 12)
    store = Store(db, fail_at=1)  # the second batch's upsert fails
    pipeline = StagedPipeline(store)
    with pytest.raises(VectorStoreUnavailable):
        processor(db, pipeline, data_dir).run(ids[:4], send=RecordingSender())
    first, second, third = (set(p["ids"]) for p in pipeline.prepares)  # the third encoded during the failed write
    now = statuses(db)
    assert {now[i] for i in first} == {"done"}
    assert {now[i] for i in second | third} == {"queued"}  # released for the retry, not marked done
    assert [u["ids"] for u in store.upserts] == [sorted(first)]
    assert record_threads() == []
    # the retry of the same message takes the released events from the backlog and finishes them
    assert processor(db, pipeline, data_dir).run(ids[:4], send=RecordingSender()) == {"done": 8, "failed": 0}
    assert set(statuses(db).values()) == {"done"}


def test_a_failed_encode_waits_for_the_write_in_flight_before_the_run_ends(db: Database, data_dir: Path) -> None:
    ids = accept(db, 12)
    store = Store(db)
    pipeline = StagedPipeline(store, fail_at=1)  # the second batch cannot be encoded
    with pytest.raises(VectorStoreUnavailable):
        processor(db, pipeline, data_dir).run(ids[:4], send=RecordingSender())
    assert record_threads() == []  # the writer has ended with the run
    now = statuses(db)
    assert {now[i] for i in ids[:4]} == {"done"}  # the write in flight was finished, not abandoned
    assert sorted(now.values()).count("done") == 4
    assert set(now.values()) == {"done", "queued"}  # the failed batch released, the rest never claimed


def test_no_drain_budget_means_one_batch_per_run(db: Database, data_dir: Path) -> None:
    ids = accept(db, 10)
    pipeline = StagedPipeline(Store(db))
    assert processor(db, pipeline, data_dir, drain_s=0).run(ids[:4], send=RecordingSender()) == {"done": 4, "failed": 0}
    assert sorted(statuses(db).values()).count("queued") == 6
