"""A sender that records what a domain function sends instead of sending it, and the batch use
case run with one (what the ingest task does, without a broker)."""

from __future__ import annotations

from typing import Any

from services.config import DEFAULT_TENANT
from services.runtime import get_runtime


class RecordingSender:
    """Keeps every (task name, args) it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, name: str, *args: Any) -> None:
        self.sent.append((name, args))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        """The args of every send of this task."""
        return [args for sent, args in self.sent if sent == name]


def run_batch(event_ids: list[str], *, tenant: str = DEFAULT_TENANT, send: Any = None) -> dict[str, int]:
    """The process's batch use case for a tenant, its follow-ups recorded (or given to send)."""
    return get_runtime().for_tenant(tenant).batch.run(event_ids, send=send or RecordingSender())
