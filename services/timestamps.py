"""The timestamp of request bodies and query parameters. Pydantic reads an ISO 8601 date-time or
a number of Unix seconds; the OpenAPI schema says both, so what the API accepts is what it documents
(a time without a zone is taken as UTC where it is stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import WithJsonSchema

Timestamp = Annotated[
    datetime,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "ISO 8601 date-time (with a zone; without one it is UTC), or Unix seconds",
        }
    ),
]
