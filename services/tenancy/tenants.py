"""Tenants and their API keys.

A key is `sift_<id>_<secret>`: the id is public (lists, logs and `sift keys revoke` name it), the
secret is 256 random bits. Only the SHA-256 of the whole key is stored, so the table gives no key
away; a fast hash is enough because the secret cannot be guessed (no password to stretch).

Scopes: `ingest` (send events and interactions), `read` (events, matches, feeds, alerts, models),
`label` (labels, acknowledging alerts) and `admin` (everything, including the FAQ base, the
watchlist, webhooks, tasks, training and models). Rows here live in the main schema only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import DEFAULT_TENANT, TENANT_PATTERN, TENANT_RULE
from services.db.models import ApiKey, Tenant
from services.errors import InvalidInput, NotFound

SCOPES: tuple[str, ...] = ("ingest", "read", "label", "admin")
KEY_PATTERN = re.compile(r"^sift_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a tenant, through one key (None for a SIFT_API_KEYS key), with its scopes."""

    tenant: str
    key_id: str | None
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """True when the key has the scope, or admin."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class NewKey:
    """A key just made: the only moment its secret is known."""

    id: str
    tenant: str
    scopes: tuple[str, ...]
    token: str


def check_tenant_id(tenant: str) -> str:
    """The tenant id, or InvalidInput saying what a tenant id may be."""
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise InvalidInput(f"tenant {tenant!r}: {TENANT_RULE}")
    return tenant


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, in a fixed order, or InvalidInput naming the unknown ones."""
    wanted = {s.strip() for s in scopes if s.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown or not wanted:
        raise InvalidInput(f"scopes {sorted(wanted) or '(none)'}: each must be one of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def add_tenant(session: Session, *, tenant: str, name: str = "", now: datetime | None = None) -> bool:
    """Record a tenant (its tables are made by services.db.migrate.upgrade_tenant); False if it existed."""
    check_tenant_id(tenant)
    if session.get(Tenant, tenant) is not None:
        return False
    session.add(Tenant(id=tenant, name=name, created_at=now or datetime.now(UTC)))
    session.flush()
    return True


def tenant_ids(session: Session) -> list[str]:
    """Every tenant, the default one first (it exists whether recorded or not)."""
    others = session.scalars(select(Tenant.id).where(Tenant.id != DEFAULT_TENANT).order_by(Tenant.id))
    return [DEFAULT_TENANT, *others]


def create_key(
    session: Session, *, tenant: str, scopes: Sequence[str], name: str = "", now: datetime | None = None
) -> NewKey:
    """A new key for an existing tenant (NotFound otherwise)."""
    wanted = check_scopes(scopes)
    if session.get(Tenant, check_tenant_id(tenant)) is None:
        raise NotFound(f"no tenant {tenant!r}; `sift keys create --tenant {tenant}` creates it")
    key_id = secrets.token_hex(6)
    token = f"sift_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=key_id,
        tenant=tenant,
        name=name,
        hash=token_hash(token),
        scopes=list(wanted),
        created_at=now or datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return NewKey(id=key_id, tenant=tenant, scopes=wanted, token=token)


def list_keys(session: Session, *, tenant: str | None = None) -> list[ApiKey]:
    """Keys (never their secrets), oldest first, of one tenant or all."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


def revoke_key(session: Session, *, key_id: str, now: datetime | None = None) -> ApiKey:
    """Revoke a key by its id (idempotent: a revoked key keeps its first revocation time)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no key with id {key_id!r} (`sift keys list` shows them)")
    if row.revoked_at is None:
        row.revoked_at = now or datetime.now(UTC)
    return row


def token_hash(token: str) -> str:
    """What the table stores of a key."""
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(session: Session, *, token: str, env_keys: Sequence[str] = ()) -> Principal | None:
    """The principal of a key, or None when it is unknown, malformed or revoked. SIFT_API_KEYS
    keys (env_keys) act as admin of the default tenant."""
    for env_key in env_keys:
        if env_key and hmac.compare_digest(env_key.encode(), token.encode()):
            return Principal(tenant=DEFAULT_TENANT, key_id=None, scopes=frozenset(SCOPES))
    match = KEY_PATTERN.fullmatch(token)
    if match is None:
        return None
    row = session.get(ApiKey, match.group(1))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, token_hash(token)):
        return None
    return Principal(tenant=row.tenant, key_id=row.id, scopes=frozenset(row.scopes))
