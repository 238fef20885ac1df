"""The events repository and migrations on both SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.db import events as repo
from services.db.migrate import upgrade
from services.db.models import Event
from services.db.session import Database
from services.errors import Conflict, DatabaseUnavailable
from services.events import accept as ingest

LIMITS = ingest.Limits(max_events=1000, max_text_chars=10_000)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'sift.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def events(n: int, prefix: str = "e", kind: str = "ticket") -> list[ingest.EventIn]:
    return [ingest.EventIn(id=f"{prefix}{i}", kind=kind, text=f"text number {i}") for i in range(n)]  # type: ignore[arg-type]


def outcome(
    s: Session, event_id: str, ok: bool, predictions: dict[str, Any], version: str | None, error: str | None = None
) -> repo.Outcome:
    """An outcome of the content the row holds now (as the pipeline makes for what it claimed)."""
    row = repo.get(s, event_id=event_id)
    assert row is not None
    return repo.Outcome(event_id, ok, predictions, version, row.content_hash, error=error)


def count(db: Database) -> int:
    with db.session_scope() as s:
        return int(s.scalar(sa.text("SELECT count(*) FROM events")) or 0)


def test_migrations_are_idempotent(db: Database) -> None:
    upgrade(db.url)  # a second upgrade (every `sift up`) changes nothing
    with db.session_scope() as s:
        assert s.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0010"
        assert s.scalar(sa.text("SELECT count(*) FROM tasks")) == 3  # the default tasks, seeded once
        assert s.scalar(sa.text("SELECT count(*) FROM faqs")) == 0
        assert s.scalar(sa.text("SELECT count(*) FROM labels WHERE outcome IS NOT NULL")) == 0


def test_resending_the_same_events_never_duplicates(db: Database) -> None:
    with db.session_scope() as s:
        first = ingest.accept(s, events=events(50), limits=LIMITS)
    with db.session_scope() as s:
        again = ingest.accept(s, events=events(50), limits=LIMITS)
    assert len(first.queued) == 50
    assert again.ids == first.ids and again.queued == []
    assert count(db) == 50


def test_changed_content_is_updated_and_queued_again(db: Database) -> None:
    with db.session_scope() as s:
        ingest.accept(s, events=events(3), limits=LIMITS)
        repo.record(s, outcomes=[outcome(s, "e1", True, {}, "m1")], now=datetime.now(UTC))
    changed = [ingest.EventIn(id="e1", kind="ticket", text="a new text")]  # type: ignore[call-arg]
    with db.session_scope() as s:
        accepted = ingest.accept(s, events=changed, limits=LIMITS)
    with db.session_scope() as s:
        row = repo.get(s, event_id="e1")
        assert row is not None and row.text == "a new text" and row.status == "queued"
    assert accepted.queued == ["e1"] and count(db) == 3


def test_a_text_re_sent_while_the_old_one_is_processed_is_not_marked_done_with_the_old_one(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session_scope() as s:
        ingest.accept(s, events=events(2), limits=LIMITS)
    with db.session_scope() as s:
        claimed = {e.id: e.content_hash for e in repo.claim(s, ids=["e0", "e1"], now=now, stale_after_s=60)}
    changed = [ingest.EventIn(id="e1", kind="ticket", text="a new text")]  # type: ignore[call-arg]
    with db.session_scope() as s:  # arrives while the worker still holds the old text of e1
        assert ingest.accept(s, events=changed, limits=LIMITS).queued == ["e1"]
    old = [repo.Outcome(i, True, {"p": i}, "m", h) for i, h in claimed.items()]
    with db.session_scope() as s:
        repo.record(s, outcomes=old, now=now)
    with db.session_scope() as s:
        e0, e1 = repo.get(s, event_id="e0"), repo.get(s, event_id="e1")
        assert e0 is not None and e0.status == "done" and e0.predictions == {"p": "e0"}
        assert e1 is not None and e1.status == "queued" and e1.text == "a new text" and e1.predictions == {}
        new_hash = e1.content_hash
    with db.session_scope() as s:  # its own message has the new text processed and recorded
        assert [e.id for e in repo.claim(s, ids=["e1"], now=now, stale_after_s=60)] == ["e1"]
        repo.record(s, outcomes=[repo.Outcome("e1", True, {"p": "new"}, "m", new_hash)], now=now)
    with db.session_scope() as s:
        e1 = repo.get(s, event_id="e1")
        assert e1 is not None and e1.status == "done" and e1.predictions == {"p": "new"}


def test_an_id_of_another_kind_is_a_conflict_and_writes_nothing(db: Database) -> None:
    with db.session_scope() as s:
        ingest.accept(s, events=events(2), limits=LIMITS)
    mixed = [*events(1, prefix="new"), *events(1, kind="news")]
    with pytest.raises(Conflict, match="another kind"), db.session_scope() as s:
        ingest.accept(s, events=mixed, limits=LIMITS)
    assert count(db) == 2


def test_claim_skips_finished_events_and_counts_attempts(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session_scope() as s:
        ingest.accept(s, events=events(4), limits=LIMITS)
        repo.record(s, outcomes=[outcome(s, "e0", True, {}, "m")], now=now)
    with db.session_scope() as s:
        claimed = repo.claim(s, ids=["e0", "e1", "e2"], now=now, stale_after_s=60)
    assert sorted(e.id for e in claimed) == ["e1", "e2"]
    assert all(e.status == "processing" and e.attempts == 1 for e in claimed)
    with db.session_scope() as s:  # a live worker holds e1 and e2: a duplicate message takes nothing
        assert repo.claim(s, ids=["e1", "e2"], now=now, stale_after_s=60) == []
    with db.session_scope() as s:  # abandoned for longer than the timeout: taken again
        later = now + timedelta(seconds=61)
        assert sorted(e.id for e in repo.claim(s, ids=["e1"], now=later, stale_after_s=60)) == ["e1"]


def test_claim_tops_a_small_batch_up_from_the_backlog(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session_scope() as s:
        ingest.accept(s, events=events(10), limits=LIMITS, now=now - timedelta(seconds=5))
    with db.session_scope() as s:
        claimed = repo.claim(s, ids=["e9"], now=now, stale_after_s=60, limit=5)
    assert len(claimed) == 5 and "e9" in {e.id for e in claimed}
    with db.session_scope() as s:
        assert repo.counts(s) == {"ticket": {"processing": 5, "queued": 5}}
        repo.release(s, ids=[e.id for e in claimed])
    with db.session_scope() as s:
        assert repo.counts(s) == {"ticket": {"queued": 10}}
        # released because a dependency was down: the claim is no attempt that `give_up` counts
        assert set(s.scalars(sa.select(Event.attempts))) == {0}


def test_a_batch_takes_over_a_dead_workers_claims_however_full_it_is(db: Database) -> None:
    # A worker died holding e0-e3 (claimed 61 s ago) and e4, which has killed 5 workers already;
    # a live worker claimed e5 10 s ago. The next batch is a full message of other ids: it takes
    # e0-e3 too, at once, instead of leaving them to a sweep that cannot get through a busy queue.
    now = datetime.now(UTC)
    with db.session_scope() as s:
        ingest.accept(s, events=events(30), limits=LIMITS, now=now - timedelta(seconds=900))
        repo.claim(s, ids=["e0", "e1", "e2", "e3"], now=now - timedelta(seconds=61), stale_after_s=60)
        for i in range(5):
            repo.claim(s, ids=["e4"], now=now - timedelta(seconds=600 - 61 * i), stale_after_s=60)
        repo.claim(s, ids=["e5"], now=now - timedelta(seconds=10), stale_after_s=60)
    own = [f"e{i}" for i in range(10, 26)]
    with db.session_scope() as s:
        claimed = repo.claim(s, ids=own, now=now, stale_after_s=60, limit=16, max_attempts=5)
    assert sorted(e.id for e in claimed) == sorted([*own, "e0", "e1", "e2", "e3"])
    assert {e.id: e.attempts for e in claimed} == {
        **dict.fromkeys(own, 1),
        **dict.fromkeys(["e0", "e1", "e2", "e3"], 2),
    }
    with db.session_scope() as s:  # a batch with room takes the rest of the backlog, not e4 or e5
        claimed = repo.claim(s, ids=[], now=now, stale_after_s=60, limit=16, max_attempts=5)
        assert sorted(e.id for e in claimed) == sorted(f"e{i}" for i in (*range(6, 10), *range(26, 30)))
        assert {e.id: e.status for e in (repo.get(s, event_id="e4"), repo.get(s, event_id="e5")) if e} == {
            "e4": "processing",
            "e5": "processing",
        }


def test_a_batch_never_takes_over_the_claims_its_own_task_is_still_writing(db: Database) -> None:
    # A draining task claims its next batch while the write thread still records e0-e3, claimed
    # 61 s ago (a slow write): they are held, not abandoned, so they are not processed twice.
    now = datetime.now(UTC)
    with db.session_scope() as s:
        ingest.accept(s, events=events(6), limits=LIMITS, now=now - timedelta(seconds=900))
        repo.claim(s, ids=["e0", "e1", "e2", "e3"], now=now - timedelta(seconds=61), stale_after_s=60)
    with db.session_scope() as s:
        held = ["e0", "e1", "e2", "e3"]
        claimed = repo.claim(s, ids=[], now=now, stale_after_s=60, limit=16, max_attempts=5, holding=held)
        assert sorted(e.id for e in claimed) == ["e4", "e5"]
        assert {e.id: e.attempts for e in s.scalars(sa.select(Event).where(Event.id.in_(held)))} == dict.fromkeys(
            held, 1
        )


def test_record_writes_a_batch_of_outcomes(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session_scope() as s:
        ingest.accept(s, events=events(3), limits=LIMITS)
        outcomes = [
            outcome(s, "e0", True, {"sentiment": {"label": "neutral"}}, "m@1"),
            outcome(s, "e1", True, {}, "m@1"),
            outcome(s, "e2", False, {}, None, error="step: ValueError: poison"),
        ]
        repo.record(s, outcomes=outcomes, now=now)
    with db.session_scope() as s:
        assert repo.counts(s) == {"ticket": {"done": 2, "failed": 1}}
        e0, e2 = repo.get(s, event_id="e0"), repo.get(s, event_id="e2")
        assert e0 is not None and e0.predictions == {"sentiment": {"label": "neutral"}} and e0.model_version == "m@1"
        assert e2 is not None and e2.error == "step: ValueError: poison"
        assert repo.processed_since(s, since=now - timedelta(seconds=1)) == 3


def test_sweep_finds_lost_messages_and_gives_up_on_killers(db: Database) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with db.session_scope() as s:
        ingest.accept(s, events=events(3), limits=LIMITS, now=long_ago)
        repo.claim(s, ids=["e1"], now=long_ago, stale_after_s=0)
        for _ in range(5):
            repo.claim(s, ids=["e2"], now=long_ago, stale_after_s=0)
    with db.session_scope() as s:
        due = ingest.due_for_resend(s, now=datetime.now(UTC), after_s=60, max_attempts=5, limit=100)
    assert sorted(due) == ["e0", "e1"]
    with db.session_scope() as s:
        e2 = repo.get(s, event_id="e2")
        assert e2 is not None and e2.status == "failed" and "gave up after 5" in (e2.error or "")
        # just re-sent: not due again until the timeout passes once more
        assert ingest.due_for_resend(s, now=datetime.now(UTC), after_s=60, max_attempts=5, limit=100) == []


def test_a_nested_sqlite_session_fails_at_once_instead_of_waiting_forever(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'nested.db'}")
    with db.session_scope(), pytest.raises(RuntimeError, match="inside another"), db.session_scope():
        pass
    with db.session_scope() as s:  # the outer scope released its turn
        assert s.scalar(sa.text("SELECT 1")) == 1
    db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_never_upgraded_says_to_run_sift_db_upgrade(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    with pytest.raises(DatabaseUnavailable, match="run `sift db upgrade`"), database.session_scope() as s:
        s.execute(sa.text("SELECT count(*) FROM events"))
    upgrade(url)  # once upgraded, the same database answers
    assert count(database) == 0
    database.dispose()


def test_a_lost_server_is_not_taken_for_a_missing_schema(tmp_path: Path) -> None:
    database = Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(DatabaseUnavailable) as raised, database.session_scope() as s:
        s.execute(sa.text("SELECT 1"))
    assert "sift db upgrade" not in raised.value.message
    database.dispose()
