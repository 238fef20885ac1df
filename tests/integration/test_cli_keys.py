"""`sift keys create|list|revoke` as an operator runs them: create prints only the key on stdout
and makes a new tenant's tables (a SQLite file of its own, or a PostgreSQL schema), list shows ids
and never secrets, revoke refuses the key from then on, and bad input exits 2 with a message and
creates nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.migrate import upgrade
from services.db.session import Database
from services.runtime import Runtime
from services.tenancy import tenants
from tests.conftest import settings_for

KEY = re.compile(r"^sift_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def sift(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    base.update(SIFT_DATA_DIR=str(data_dir), SIFT_LOG_LEVEL="WARNING", COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli.app", *args], env=base, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    url = str(request.getfixturevalue("pg_url")) if getattr(request, "param", "sqlite") == "postgresql" else ""
    upgrade(url or f"sqlite:///{data_dir / 'sift.db'}")
    yield url


def env_for(database_url: str) -> dict[str, str]:
    return {"SIFT_DATABASE_URL": database_url} if database_url else {}


def main_db(data_dir: Path, database_url: str) -> Database:
    return Database(database_url or f"sqlite:///{data_dir / 'sift.db'}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_create_prints_only_the_key_and_makes_the_tenant(data_dir: Path, database_url: str) -> None:
    env = env_for(database_url)
    created = sift(data_dir, "keys", "create", "--tenant", "acme", "--scopes", "ingest,read", "--name", "ci", **env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert KEY.fullmatch(token) and created.stdout == token + "\n"  # nothing else on stdout
    assert "tenant acme created" in created.stderr and token.split("_")[1] in created.stderr
    assert token not in created.stderr

    again = sift(data_dir, "keys", "create", "--tenant", "acme", "--scopes", "label", **env)
    assert again.returncode == 0 and "tenant acme created" not in again.stderr  # the tenant existed

    db = main_db(data_dir, database_url)
    try:
        with db.session_scope() as s:
            assert tenants.tenant_ids(s) == ["default", "acme"]
            principal = tenants.authenticate(s, token=token)
            assert principal is not None and principal.tenant == "acme"
            assert principal.scopes == frozenset({"ingest", "read"})
            dump = repr(list(s.execute(sa.text("SELECT * FROM api_keys")).mappings()))
            assert token not in dump and token.split("_", 2)[2] not in dump
        with db.engine.connect() as conn:
            if database_url:
                tables = sa.inspect(conn).get_table_names(schema="tenant_acme")
                assert {"events", "faqs", "alerts", "interactions"} <= set(tables)
                assert "api_keys" not in tables
    finally:
        db.dispose()
    if not database_url:
        acme = data_dir / "tenants" / "acme" / "sift.db"
        engine = sa.create_engine(f"sqlite:///{acme}")
        try:
            in_file = set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"events", "faqs", "alerts", "interactions"} <= in_file and "api_keys" not in in_file


def test_list_shows_ids_never_secrets_and_revoke_refuses_the_key(data_dir: Path, database_url: str) -> None:
    tokens = [
        sift(data_dir, "keys", "create", "--tenant", "acme", "--scopes", "ingest,read").stdout.strip(),
        sift(data_dir, "keys", "create", "--scopes", "admin", "--name", "ops").stdout.strip(),
    ]
    assert all(KEY.fullmatch(t) for t in tokens)
    ids = [t.split("_")[1] for t in tokens]
    listed = sift(data_dir, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(i in listed.stdout for i in ids) and "ingest,read" in listed.stdout and "ops" in listed.stdout
    for token in tokens:
        assert token not in listed.stdout + listed.stderr and token.split("_", 2)[2] not in listed.stdout
    only_acme = sift(data_dir, "keys", "list", "--tenant", "acme").stdout
    assert ids[0] in only_acme and ids[1] not in only_acme

    revoked = sift(data_dir, "keys", "revoke", ids[0])
    assert revoked.returncode == 0, revoked.stderr
    assert f"key {ids[0]} of tenant acme revoked" in revoked.stderr
    assert sift(data_dir, "keys", "revoke", ids[0]).returncode == 0  # idempotent
    row = next(line for line in sift(data_dir, "keys", "list").stdout.splitlines() if ids[0] in line)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d\s*│\s*\d{4}-\d\d-\d\d \d\d:\d\d", row), row  # created, revoked

    runtime = Runtime(settings_for(data_dir, key_cache_s=0))
    try:
        with TestClient(create_app(runtime, warm_model=False)) as client:
            refused = client.get("/v1/events/x", headers={"Authorization": f"Bearer {tokens[0]}"})
            assert refused.status_code == 401
            admin = client.get("/v1/events/x", headers={"Authorization": f"Bearer {tokens[1]}"})
            assert admin.status_code == 404  # a valid key; no such event
    finally:
        runtime.close()

    missing = sift(data_dir, "keys", "revoke", "000000000000")
    assert missing.returncode == 2 and "no key with id '000000000000'" in missing.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tenant", "Acme!"], "tenant 'Acme!'"),
        (["--tenant", "9lives"], "tenant '9lives'"),
        (["--tenant", "a" * 33], "use 1 to 32 lowercase letters"),
        (["--tenant", "newco", "--scopes", "ingest,root"], "each must be one of ingest, read, label, admin"),
        (["--tenant", "newco", "--scopes", ","], "each must be one of"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_creates_nothing(
    data_dir: Path, database_url: str, args: list[str], says: str
) -> None:
    result = sift(data_dir, "keys", "create", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr and result.stdout == ""
    assert not (data_dir / "tenants").exists()
    db = main_db(data_dir, database_url)
    try:
        with db.session_scope() as s:
            assert tenants.tenant_ids(s) == ["default"]
            assert tenants.list_keys(s) == []
    finally:
        db.dispose()
