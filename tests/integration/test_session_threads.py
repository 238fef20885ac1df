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
