"""A session scope opened in one thread and closed in another (FastAPI runs a sync dependency's
enter and exit in whichever pool threads are free) leaves neither thread unable to open the next."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import text

from services.db.session import Database


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
