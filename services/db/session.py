"""Engines and the session scope. Sessions live at the boundary (a request, a task);
repositories take a session, may flush, never commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.config import DEFAULT_TENANT
from services.errors import DatabaseUnavailable

PG_CONNECT_TIMEOUT_S = 5
# PostgreSQL's SQLSTATEs for a table or column the schema lacks (not migrated, or migrated to an older head)
MISSING_SCHEMA_SQLSTATES = {"42P01", "42703"}


def make_engine(url: str) -> Engine:
    """An engine for PostgreSQL or SQLite; SQLite runs in WAL mode so the API, the worker
    and the CLI can share one file."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Without a connect timeout, a server that accepts but never answers holds the caller (a request,
    # a readiness check) forever; `?connect_timeout=N` in the URL overrides it (libpq's minimum is 2 s).
    connect_args = {} if "connect_timeout=" in url else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def tenant_schema(tenant: str) -> str:
    """The PostgreSQL schema of a tenant's tables (the default tenant's are in the main schema)."""
    return f"tenant_{tenant}"


def tenant_url(url: str, tenant: str) -> str:
    """The database URL of a tenant: on SQLite a file of its own beside the main one, on PostgreSQL
    the same database (its tables are in a schema of their own)."""
    if tenant == DEFAULT_TENANT or not url.startswith("sqlite"):
        return url
    prefix, path = url.split("///", 1)
    if not path or path == ":memory:":
        raise ValueError("tenants other than the default need a SQLite file, not an in-memory database")
    return f"{prefix}///{Path(path).parent / 'tenants' / tenant / 'sift.db'}"


def missing_schema(exc: DBAPIError) -> bool:
    """Whether a statement failed because a table or column does not exist: a database that
    `sift db upgrade` has not (yet) brought to this code's schema."""
    if getattr(exc.orig, "sqlstate", None) in MISSING_SCHEMA_SQLSTATES:  # psycopg
        return True
    message = str(exc.orig)
    return isinstance(exc, OperationalError) and ("no such table" in message or "no such column" in message)


class Database:
    """One engine and its session factory, per process and tenant. A tenant's sessions see only its
    tables: on SQLite they open its own file; on PostgreSQL every transaction starts with
    `SET LOCAL search_path` to its schema alone, so an unqualified table name cannot reach another
    tenant's (nor the main schema's) rows."""

    def __init__(self, url: str, *, tenant: str = DEFAULT_TENANT, engine: Engine | None = None) -> None:
        self.url = url
        self.tenant = tenant
        self.engine = engine or make_engine(tenant_url(url, tenant))
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if tenant != DEFAULT_TENANT and not url.startswith("sqlite"):
            set_path = f'SET LOCAL search_path TO "{tenant_schema(tenant)}"'
            event.listen(self.sessions, "after_begin", lambda _s, _t, conn: conn.exec_driver_sql(set_path))
        # SQLite has one writer at a time and its busy handler sleeps in steps of up to 100 ms;
        # taking turns in-process instead keeps concurrent requests from sleeping on each other.
        self._turns: threading.Lock | None = threading.Lock() if url.startswith("sqlite") else None
        self._inside: set[int] = set()  # the threads inside a session_scope (SQLite)

    def for_tenant(self, tenant: str) -> Database:
        """The database of a tenant (sharing this engine's pool on PostgreSQL)."""
        if tenant == self.tenant:
            return self
        if self.tenant != DEFAULT_TENANT:
            raise ValueError("derive tenant databases from the main one")
        shared = None if self.url.startswith("sqlite") else self.engine
        return Database(self.url, tenant=tenant, engine=shared)

    @contextmanager
    def session_scope(self, *, guard: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on error; a lost connection
        surfaces as DatabaseUnavailable so callers can retry. guard=False for a scope that is
        entered and left as a dependency (the entering thread returns at once, so a scope nested
        in its call stack cannot happen, and another request may rightly reuse that thread)."""
        if self._turns is None:
            with self._transaction() as session:
                yield session
            return
        me = threading.get_ident() if guard else None
        if me is not None and me in self._inside:
            # The turn lock is not re-entrant: a second scope in the same thread would wait forever.
            raise RuntimeError("a session_scope inside another in the same thread: open it before, or pass the session")
        with self._turns:
            if me is not None:
                self._inside.add(me)
            try:
                with self._transaction() as session:
                    yield session
            finally:
                # by thread id, not a thread-local: FastAPI may close a request's session in another
                # pool thread than the one that opened it, and that thread's mark must go all the same
                self._inside.discard(me)

    @contextmanager
    def read_scope(self) -> Iterator[Session]:
        """A transaction that only reads (a feed, a match). On SQLite it does not wait for the
        writers' turn: in WAL mode readers see the last commit and block no one, so concurrent
        requests read side by side instead of queueing behind each other and the worker; a
        write in it fails (PRAGMA query_only). On PostgreSQL it is a session_scope."""
        if self._turns is None:
            with self._transaction() as session:
                yield session
            return
        with self._transaction() as session:
            connection = session.connection()
            connection.exec_driver_sql("PRAGMA query_only=ON")
            try:
                yield session
            finally:
                with suppress(DBAPIError):  # an invalidated connection is not returned to the pool
                    connection.exec_driver_sql("PRAGMA query_only=OFF")

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        session = self.sessions()
        session.info["tenant"] = self.tenant  # the events repository derives point ids from it
        try:
            yield session
            session.commit()
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            if missing_schema(exc):
                raise DatabaseUnavailable(
                    f"database unavailable: its schema is missing or older than this code ({exc.orig}); "
                    "run `sift db upgrade`"
                ) from exc
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise DatabaseUnavailable(f"database unavailable: {exc.orig}") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query answers."""
        with self.session_scope() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Drop pooled connections (after a fork, or at shutdown)."""
        self.engine.dispose()
