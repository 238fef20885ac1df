"""A session scope opened in one thread and closed in another (FastAPI runs a sync dependency's
enter and exit in whichever pool threads are free) leaves neither thread unable to open the next."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from services.db.session import Database
from services.errors import DatabaseUnavailable


def test_a_scope_closed_in_another_thread_frees_the_thread_that_opened_it(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    opener, closer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        scope = db.session_scope()
        session = opener.submit(scope.__enter__).result()
        session.execute(text("SELECT 1"))
        closer.submit(scope.__exit__, None, None, None).result()

        def again() -> int:
            with db.session_scope() as s:
                return int(s.execute(text("SELECT 2")).scalar_one())

        assert opener.submit(again).result(timeout=10) == 2
        assert closer.submit(again).result(timeout=10) == 2
    finally:
        opener.shutdown()
        closer.shutdown()
        db.dispose()


def test_a_dependency_scope_lets_its_thread_serve_the_next_request(tmp_path: Path) -> None:
    """The API's session dependency (guard=False): while one request's scope is open, the pool
    thread that opened it takes another request's scope, which waits its turn instead of failing."""
    db = Database(f"sqlite:///{tmp_path / 'y.db'}")
    opener, closer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        scope = db.session_scope(guard=False)
        opener.submit(scope.__enter__).result()

        def next_request() -> int:
            with db.session_scope(guard=False) as s:
                return int(s.execute(text("SELECT 3")).scalar_one())

        waiting = opener.submit(next_request)
        closer.submit(scope.__exit__, None, None, None).result()
        assert waiting.result(timeout=10) == 3
    finally:
        opener.shutdown()
        closer.shutdown()
        db.dispose()


def test_a_read_scope_does_not_wait_for_an_open_write_and_sees_the_last_commit(tmp_path: Path) -> None:
    """Feeds and matches read in a read scope: while a writer holds SQLite's turn (an open write
    transaction), a read in another thread answers at once with the last committed rows."""
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    writer, reader = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        with db.session_scope() as s:
            s.execute(text("CREATE TABLE t (n INTEGER)"))
            s.execute(text("INSERT INTO t VALUES (1)"))
        scope = db.session_scope()
        session = writer.submit(scope.__enter__).result()
        writer.submit(session.execute, text("INSERT INTO t VALUES (2)")).result()

        def read() -> list[int]:
            with db.read_scope() as r:
                return [int(n) for n in r.execute(text("SELECT n FROM t ORDER BY n")).scalars()]

        assert reader.submit(read).result(timeout=5) == [1]  # the turn is held: a session_scope would wait
        writer.submit(scope.__exit__, None, None, None).result()
        assert reader.submit(read).result(timeout=5) == [1, 2]
    finally:
        writer.shutdown()
        reader.shutdown()
        db.dispose()


def test_a_read_scope_refuses_writes_and_leaves_its_connection_writable(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with db.session_scope() as s:
            s.execute(text("CREATE TABLE t (n INTEGER)"))
        with pytest.raises(DatabaseUnavailable, match="readonly"), db.read_scope() as r:
            r.execute(text("INSERT INTO t VALUES (1)"))
        with db.session_scope() as s:  # the pooled connection is writable again
            s.execute(text("INSERT INTO t VALUES (2)"))
            assert s.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()
