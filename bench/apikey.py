"""API keys for the benchmarks: every call but /healthz, /readyz and /metrics needs one.

One way throughout: a bench that starts `sift up` in a data dir reads the admin key that the first
start saved to `<data dir>/api-key` (Settings.saved_key_file), as the CLI on the same machine does;
an in-process bench (TestClient on create_app) makes a key in its runtime, as `sift keys create` does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

SAVED_KEY = "api-key"  # Settings.saved_key_file, relative to the data dir


def saved_key(data_dir: Path, timeout_s: float = 10.0) -> str:
    """The key the first `sift up` in data_dir saved (it is written before the API listens, so once
    /readyz answers it is there; the short wait only covers a slow file system)."""
    path = data_dir / SAVED_KEY
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            key = path.read_text().strip()
        except FileNotFoundError:
            key = ""
        if key:
            return key
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"{path}: no saved API key; the data dir must be new to `sift up` (its first start saves one)"
            )
        time.sleep(0.1)


def bearer(key: str) -> dict[str, str]:
    """The header that carries the key."""
    return {"Authorization": f"Bearer {key}"}


def runtime_key(runtime: Any, scopes: tuple[str, ...] = ("admin",)) -> str:
    """A new key of the default tenant (recorded when new) in an in-process runtime."""
    from services.config import DEFAULT_TENANT
    from services.tenancy import tenants

    runtime.create_tenant(DEFAULT_TENANT)
    with runtime.control_db.session_scope() as session:
        return tenants.create_key(session, tenant=DEFAULT_TENANT, scopes=scopes, name="bench").token
