"""Alembic, driven from code: `sift db upgrade` and `sift up` call upgrade(), which brings the main
schema and every tenant's schema (SQLite: file) to the newest revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

import migrations
from services.config import DEFAULT_TENANT
from services.db.models import Tenant
from services.db.session import Database, tenant_schema, tenant_url

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    """An Alembic config for the migrations shipped with Sift, pointed at url."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at url to revision (default: the newest): the main schema, then every tenant's."""
    command.upgrade(alembic_config(url), revision)
    db = Database(url)
    try:
        with db.session_scope() as session:
            has_tenants = inspect(session.connection()).has_table(Tenant.__tablename__)  # not below 0006
            tenants = list(session.scalars(select(Tenant.id).where(Tenant.id != DEFAULT_TENANT))) if has_tenants else []
    finally:
        db.dispose()
    for tenant in tenants:
        upgrade_tenant(url, tenant, revision)


def upgrade_tenant(url: str, tenant: str, revision: str = "head") -> None:
    """Create or upgrade one tenant's tables: its own schema on PostgreSQL, its own file on SQLite."""
    config = alembic_config(tenant_url(url, tenant))
    config.attributes["tenant"] = tenant
    if not url.startswith("sqlite"):
        config.attributes["schema"] = tenant_schema(tenant)
    command.upgrade(config, revision)
