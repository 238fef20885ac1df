"""The domain's exceptions. The API maps them to HTTP in one place (services/api/errors.py);
tasks map them to retry (Transient) or fail (everything else).

    DomainError
    ├── InvalidInput        bad input from a caller: 422 / CLI exit 2
    ├── NotFound            404
    ├── Conflict            409
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


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Transient(DomainError):
    code = "unavailable"


class DatabaseUnavailable(Transient):
    code = "database_unavailable"


class BrokerUnavailable(Transient):
    code = "broker_unavailable"


class VectorStoreUnavailable(Transient):
    code = "vector_store_unavailable"
