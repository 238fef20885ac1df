"""The OpenAPI document lists, for every operation, the error answers it can give, all in the one
envelope of services/api/errors.py, so clients (and the schema fuzzer) can rely on them.

Which errors an operation documents follows from its shape, in one place instead of on every
route: any call but the probes needs a key with the route's scope (401, 403); a body can be
malformed (400), too large (413) or invalid (422); parameters can be invalid (422); a path names
something that may not exist (404); any call can meet the rate limit (429) or a dependency that
is down (503). Errors that only some operations raise (409, a 422
without input) are declared on those routes with `errors.responses(...)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.api.errors import DESCRIPTIONS, ErrorOut
from services.api.rate_limit import EXEMPT

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before the next request", "schema": {"type": "integer"}}}


def document_errors(app: FastAPI) -> None:
    """Make app.openapi() add the error answers to every operation (computed once, then cached)."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_errors(make())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorOut"] = error_schema
    # FastAPI's own 422 body ({"detail": [...]}) is never sent: the handlers answer with the envelope.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    # Every call but the probes needs a key (services/api/auth.py): the document says so, so /docs
    # offers an "Authorize" box and clients generated from it send the header.
    schema["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if path not in EXEMPT:
                operation["security"] = [{"apiKey": []}]
            _add_operation_errors(operation, codes=_codes_for(path, operation))


def _codes_for(path: str, operation: dict[str, Any]) -> set[int]:
    codes = set() if path in EXEMPT else {401, 403, 429, 503}
    parameters = operation.get("parameters", [])
    if "requestBody" in operation:
        codes |= {400, 413, 422}
    if parameters:
        codes.add(422)
    if any(p.get("in") == "path" for p in parameters):
        codes.add(404)
    return codes


def _add_operation_errors(operation: dict[str, Any], *, codes: set[int]) -> None:
    responses = operation.setdefault("responses", {})
    default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if default_422.get("$ref", "").endswith("/HTTPValidationError"):
        responses["422"] = _response(422)
    for code in sorted(codes):
        responses.setdefault(str(code), _response(code))


def _response(code: int) -> dict[str, Any]:
    content = {"application/json": {"schema": ERROR_REF}}
    response: dict[str, Any] = {"description": DESCRIPTIONS[code], "content": content}
    if code == 429:
        response["headers"] = RETRY_AFTER
    return response
