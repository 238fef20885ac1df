"""ROUTE_SCOPES cannot go stale: every API route but the probes has a scope in the table (a route
missing from it would silently need admin), and every entry of the table is a real route."""

from __future__ import annotations

import re

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import compile_path

from services.api.app import create_app
from services.api.auth import ROUTE_SCOPES, scope_for
from services.api.rate_limit import EXEMPT
from services.config import Settings
from services.runtime import Runtime
from services.tenancy.tenants import SCOPES


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # No database or model is touched: the app is only built, never started.
    return create_app(Runtime(Settings(data_dir=tmp_path_factory.mktemp("scopes"))), warm_model=False)


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every API route, HEAD left out (it is answered as GET). FastAPI >= 0.165
    keeps included routers as one entry each; iter_route_contexts walks them (older: a flat list)."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(walk(app.routes)) if walk is not None else list(app.routes)
    found: set[tuple[str, str]] = set()
    for route in routes:
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            continue  # the OpenAPI document and /docs: plain Starlette routes
        path: str = getattr(route, "path", "")
        methods: set[str] = getattr(route, "methods", None) or set()
        found |= {(method, path) for method in methods if method != "HEAD"}
    return found


def openapi_routes(app: FastAPI) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}


def test_the_route_walk_sees_what_the_openapi_document_lists(app: FastAPI) -> None:
    documented = openapi_routes(app)
    assert len(documented) > 30
    assert documented <= api_routes(app)
    assert api_routes(app) - documented == {("GET", "/metrics")}  # the one route kept out of the document


def test_every_api_route_but_the_probes_has_a_scope(app: FastAPI) -> None:
    missing = {(m, p) for m, p in api_routes(app) if p not in EXEMPT} - set(ROUTE_SCOPES)
    assert not missing, f"add these routes to services.api.auth.ROUTE_SCOPES: {sorted(missing)}"
    assert {p for _, p in api_routes(app) if p in EXEMPT} == EXEMPT


def test_every_entry_of_the_table_is_a_route(app: FastAPI) -> None:
    stale = set(ROUTE_SCOPES) - api_routes(app)
    assert not stale, f"ROUTE_SCOPES names routes that do not exist: {sorted(stale)}"
    assert not {p for _, p in ROUTE_SCOPES} & EXEMPT


def test_every_scope_in_the_table_is_a_known_scope() -> None:
    assert set(ROUTE_SCOPES.values()) <= set(SCOPES)
    assert set(ROUTE_SCOPES.values()) == set(SCOPES)  # each scope opens something


def test_a_route_outside_the_table_needs_admin_and_head_is_read_as_get() -> None:
    assert scope_for("GET", "/v1/not-a-route") == "admin"
    assert scope_for("PATCH", "/v1/events/{event_id}") == "admin"
    assert scope_for("HEAD", "/v1/events/{event_id}") == ROUTE_SCOPES[("GET", "/v1/events/{event_id}")] == "read"


def test_writes_of_shared_configuration_need_admin() -> None:
    # The FAQ base, the watchlist, webhooks, tasks, training and models are the tenant's configuration.
    for (method, path), scope in ROUTE_SCOPES.items():
        configures = method in ("PUT", "DELETE") or path.startswith(("/v1/tasks", "/v1/training", "/v1/models/"))
        if configures and method != "GET":
            assert scope == "admin", (method, path, scope)


def test_a_url_matches_one_entry_of_the_table_only() -> None:
    # The middleware checks the scope of the entry a URL matches: two entries of one method matching
    # the same URL could check one route's scope and let the request reach the other.
    patterns = [(method, compile_path(path)[0], path) for method, path in ROUTE_SCOPES]
    for method, path in ROUTE_SCOPES:
        url = re.sub(r"\{[a-z_]+\}", "x", path)
        matching = [p for m, regex, p in patterns if m == method and regex.match(url)]
        assert matching == [path], (method, url, matching)
