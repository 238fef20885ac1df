"""`sift keys create|list|revoke`: API keys and the tenants they belong to. These work on the
database directly (SIFT_DATABASE_URL), as the operator who runs `sift db upgrade` does."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.output import exit_codes
from services.config import DEFAULT_TENANT

keys_app = typer.Typer(help="API keys (stored hashed) and the tenants they belong to.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for; created when new")] = DEFAULT_TENANT,
    scopes: Annotated[str, typer.Option(help="comma-separated: ingest, read, label, admin")] = "ingest,read,label",
    name: Annotated[str, typer.Option(help="what the key is for, shown by `sift keys list`")] = "",
) -> None:
    """Create a key and print it once (only its hash is kept); a new tenant gets its tables first."""
    from services.runtime import get_runtime
    from services.tenancy import tenants

    def create() -> tenants.NewKey:
        runtime = get_runtime()
        wanted = tenants.check_scopes(scopes.split(","))  # checked before a tenant is made for nothing
        if runtime.create_tenant(tenants.check_tenant_id(tenant)):
            Console(stderr=True).print(f"tenant {tenant} created")
        with runtime.control_db.session_scope() as session:
            return tenants.create_key(session, tenant=tenant, scopes=wanted, name=name)

    key = exit_codes(create)
    Console(stderr=True).print(f"key {key.id} for tenant {key.tenant}, scopes {', '.join(key.scopes)}:")
    print(key.token)  # stdout holds only the key, for `KEY=$(sift keys create ...)`


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None) -> None:
    """Every key (never its secret): id, tenant, scopes, name, created, revoked."""
    from services.runtime import get_runtime
    from services.tenancy import tenants

    table = Table("id", "tenant", "scopes", "name", "created", "revoked")
    with get_runtime().control_db.session_scope() as session:
        for key in tenants.list_keys(session, tenant=tenant):
            revoked = f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
            table.add_row(
                key.id, key.tenant, ",".join(key.scopes), key.name, f"{key.created_at:%Y-%m-%d %H:%M}", revoked
            )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id, as `sift keys list` shows it")]) -> None:
    """Revoke a key: the API refuses it within SIFT_KEY_CACHE_S seconds."""
    from services.runtime import get_runtime
    from services.tenancy import tenants

    def revoke() -> str:
        runtime = get_runtime()
        with runtime.control_db.session_scope() as session:
            row = tenants.revoke_key(session, key_id=key_id)
            within = runtime.settings.key_cache_s
            return f"key {row.id} of tenant {row.tenant} revoked (the API refuses it within {within:g} s)"

    Console(stderr=True).print(exit_codes(revoke))
