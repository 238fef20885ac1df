"""The domain's exceptions. The API maps them to HTTP in one place (services/api/errors.py);
tasks map them to retry (Transient) or fail (everything else).

    DomainError
    ├── InvalidInput        bad input from a caller: 422 / CLI exit 2
    ├── NotFound            404
    ├── Conflict            409
    ├── Unauthorized        no key, or not a valid one: 401
    ├── Forbidden           a valid key without the scope a call needs: 403
    └── Transient           a dependency is down for a while: retry with backoff
        ├── DatabaseUnavailable
        ├── BrokerUnavailable
        └── VectorStoreUnavailable
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    code = "invalid_input"


def invalid_batch(noun: str, problems: list[dict[str, Any]], *, field: str) -> InvalidInput:
    """InvalidInput for a batch with bad items: the first problem spelled out (where and what to
    fix), how many there are, and all of them in details ({"index", "field", "problem"} each)."""
    first = problems[0]
    where = f"{field}.{first['index']}.{first['field']}"
    more = f"; {len(problems)} {noun} problems in all, see details" if len(problems) > 1 else ""
    return InvalidInput(f"{where}: {first['problem']}{more}; nothing was written", details=problems)


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class Transient(DomainError):
    code = "unavailable"


class DatabaseUnavailable(Transient):
    code = "database_unavailable"


class BrokerUnavailable(Transient):
    code = "broker_unavailable"


class VectorStoreUnavailable(Transient):
    code = "vector_store_unavailable"


def public_message(exc: Transient) -> str:
    """What a caller is told about an unavailable dependency: which one, never its address (the
    driver's text names hosts and ports, so it goes to the log only)."""
    if isinstance(exc, DatabaseUnavailable) and "sift db upgrade" in exc.message:
        return "database unavailable: its schema is missing or older than this code; run `sift db upgrade`"
    for cls, name in ((DatabaseUnavailable, "database"), (BrokerUnavailable, "broker")):
        if isinstance(exc, cls):
            return f"{name} unavailable; retry later"
    if exc.code == "vector_store_owned_elsewhere":  # services.vectors.owner.OwnedElsewhere
        return "this process does not own the embedded vector store: another process holds it (see the log)"
    if isinstance(exc, VectorStoreUnavailable):
        return "vector store unavailable; retry later"
    return "a dependency is unavailable; retry later"
