"""One place maps domain errors and request problems to JSON errors:
{"error": {"code", "message", "details"}} with a 4xx status that fits."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Transient,
    Unauthorized,
    public_message,
)

log = logging.getLogger(__name__)

STATUS_FOR: dict[type[DomainError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    Transient: 503,
}
HTTP_CODES = {
    401: "unauthorized",
    413: "body_too_large",
    429: "rate_limited",
}  # codes of errors raised as HTTPException
DESCRIPTIONS = {
    400: "The body is not valid JSON (or not valid Unicode text).",
    401: "No API key, or not a valid one: send `Authorization: Bearer <key>` (`sift keys create`).",
    403: "The key lacks the scope this call needs (ingest, read, label or admin).",
    404: "Nothing with this id.",
    409: "Conflicts with what is stored; the message says what.",
    413: "The body is larger than SIFT_MAX_BODY_BYTES; send a smaller one (split the batch).",
    422: "Invalid input: the message names the first problem, details lists every field and what to fix.",
    429: "Over the client's rate limit (SIFT_RATE_LIMIT_PER_S); retry after Retry-After seconds.",
    503: "A dependency (database, broker, vector store, model) is unavailable for now; retry later.",
}


class ErrorInfo(BaseModel):
    """What went wrong."""

    code: str = Field(description="stable, for programs: invalid_input, not_found, conflict, rate_limited, ...")
    message: str = Field(description="for people: what was wrong and what to fix")
    details: Any = Field(None, description="per field or per item problems, ids, limits; shape depends on code")


class ErrorOut(BaseModel):
    """The envelope of every error answer."""

    error: ErrorInfo


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer with these error statuses beyond those its
    shape implies (see services/api/openapi.py)."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error envelope every 4xx/5xx response uses."""
    return {"error": {"code": code, "message": message, "details": details}}


def status_for(exc: DomainError) -> int:
    """The HTTP status of a domain error."""
    return next((code for cls, code in STATUS_FOR.items() if isinstance(exc, cls)), 400)


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    message, details = exc.message, exc.details
    if isinstance(exc, Transient):
        log.warning("answered 503: %s", exc.message)
        message, details = public_message(exc), None
    return JSONResponse(error_body(exc.code, message, details), status_code=status, headers=headers)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = errors[0].get("ctx", {}).get("error", "")
        return JSONResponse(
            error_body("invalid_json", f"the request body is not valid JSON: {detail}".strip()), status_code=400
        )
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": _problem(e)} for e in errors
    ]
    first = details[0] if details else {"field": "", "problem": "invalid"}
    message = f"{first['field'] or 'body'}: {first['problem']}"
    if len(details) > 1:
        message += f" (and {len(details) - 1} more problem(s), see details)"
    return JSONResponse(error_body("invalid_input", message, details), status_code=422)


def _problem(error: Any) -> str:
    """Pydantic's message; for an unknown field, the fields that are known there (a guessed `ts` on
    an event is told `occurred_at`)."""
    if error.get("type") != "extra_forbidden":
        return str(error.get("msg", ""))
    from services.events.accept import EventIn
    from services.matching.faq import FaqIn
    from services.recommend.interactions import InteractionIn
    from services.training.labels import LabelIn

    items: dict[str, type[BaseModel]] = {
        "events": EventIn,
        "faqs": FaqIn,
        "interactions": InteractionIn,
        "labels": LabelIn,
    }
    loc = [p for p in error.get("loc", ()) if p != "body"]
    model = items.get(str(loc[0])) if len(loc) == 3 else None  # e.g. events.0.ts
    hint = f"the fields are {', '.join(model.model_fields)}" if model else "the OpenAPI schema (/docs) lists the fields"
    return f"unknown field {loc[-1]!r}; {hint}" if loc else f"unknown field; {hint}"


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the handlers on app."""
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
