"""A small client of the running API, for CLI commands that need the process that owns the
vector store and the model (in the embedded default, only `sift up` may open the store)."""

from __future__ import annotations

from typing import Any

import httpx

from services.config import get_settings
from services.errors import DomainError, InvalidInput, NotFound, Transient


class ApiUnavailable(Transient):
    code = "api_unavailable"


def call(base_url: str, method: str, path: str, *, json: Any = None, timeout: float = 300.0) -> Any:
    """The JSON answer of one request; a 4xx becomes InvalidInput/NotFound with the API's message,
    no answer at all ApiUnavailable."""
    response = _send(base_url, method, path, json=json, timeout=timeout)
    if response.status_code < 400:
        return response.json() if response.content else None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {"message": response.text[:500], "details": None}
    message, details = error.get("message", ""), error.get("details")
    if response.status_code == 404:
        raise NotFound(message, details=details)
    if response.status_code in (401, 403):
        raise InvalidInput(f"{message} (the CLI sends SIFT_API_KEY, else the key `sift up` saved)", details=details)
    if response.status_code < 500:
        raise InvalidInput(message, details=details)
    raise DomainError(f"the API answered {response.status_code}: {message}", details=details)


def probe(base_url: str, path: str, *, timeout: float = 5.0) -> tuple[int, Any]:
    """The status code and JSON body of a GET whose every answer means something (/readyz's 503);
    no answer at all is ApiUnavailable."""
    response = _send(base_url, "GET", path, json=None, timeout=timeout)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def _send(base_url: str, method: str, path: str, *, json: Any, timeout: float) -> httpx.Response:
    try:
        return httpx.request(method, f"{base_url}{path}", json=json, timeout=timeout, headers=_auth())
    except httpx.TransportError as exc:
        raise ApiUnavailable(
            f"no Sift API at {base_url} ({type(exc).__name__}): start it with `sift up` or set SIFT_API_URL"
        ) from exc


def _auth() -> dict[str, str]:
    """The CLI's key: SIFT_API_KEY, else the key `sift up` saved in the data dir on its first start."""
    settings = get_settings()
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
    elif settings.saved_key_file.is_file():
        key = settings.saved_key_file.read_text().strip()
    else:
        return {}
    return {"Authorization": f"Bearer {key}"}
