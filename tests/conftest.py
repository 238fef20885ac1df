"""Shared fixtures. Integration tests use the machine's real PostgreSQL and Redis (each test gets
its own database / Redis db number) and embedded Qdrant in a temporary data dir."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.config import DEFAULT_TENANT, Settings
from services.db.migrate import upgrade
from services.embedding.encoder import Encoder
from services.runtime import Runtime, reset_runtime
from services.tenancy import tenants

# The int8 ONNX file is made once per model (seconds); tests share one cache instead of a new one per data dir.
os.environ.setdefault("SIFT_ONNX_DIR", str(Path.home() / ".cache" / "sift" / "onnx"))
PG_ADMIN_URL = os.environ.get("SIFT_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SIFT_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The packaged model, loaded once per test session."""
    settings = Settings()
    return Encoder.load(settings.model_path, device="cpu")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sift-data"
    path.mkdir()
    return path


@contextmanager
def new_pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; its URL."""
    name = f"sift_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with new_pg_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database number of its own for one test, flushed before and after."""
    client = redis.Redis.from_url(REDIS_URL)
    lock_key = "sift-test-db-lock"
    for number in range(1, 16):
        if client.set(f"{lock_key}:{number}", os.getpid(), nx=True, ex=3600):
            break
    else:  # pragma: no cover
        pytest.fail("no free Redis database number for the test")
    url = f"{REDIS_URL}/{number}"
    db = redis.Redis.from_url(url)
    db.flushdb()
    try:
        yield url
    finally:
        db.flushdb()
        client.delete(f"{lock_key}:{number}")


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: its own data dir, small batches, fast sweeps."""
    values: dict[str, object] = {"data_dir": data_dir, "batch_wait_ms": 20, "log_level": "WARNING"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def api_key(runtime: Runtime, *, tenant: str = DEFAULT_TENANT, scopes: tuple[str, ...] = ("admin",)) -> str:
    """A new key of a tenant (made when new), as `sift keys create` makes it."""
    runtime.create_tenant(tenant)
    with runtime.control_db.session_scope() as session:
        return tenants.create_key(session, tenant=tenant, scopes=scopes, name="test").token


def authorize(client: TestClient, runtime: Runtime, **key: Any) -> TestClient:
    """The client, sending a new key (admin of the default tenant unless key says otherwise) on every request."""
    client.headers["Authorization"] = f"Bearer {api_key(runtime, **key)}"
    return client


@contextmanager
def open_runtime(settings: Settings, encoder: Encoder, *, process_wide: bool = True) -> Iterator[Runtime]:
    """A runtime on a migrated database that shares the session's loaded model, closed afterwards.

    process_wide: it is also the process's runtime (`run_batch` and the worker's tasks use that one)."""
    upgrade(settings.sqlalchemy_url)
    rt = reset_runtime(settings) if process_wide else Runtime(settings)
    rt._made["encoder"] = encoder
    try:
        yield rt
    finally:
        rt.close()
        if process_wide:
            reset_runtime()
