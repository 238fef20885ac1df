"""API keys and scopes on the embedded defaults: no key or a bad one is a 401 with the error
envelope and `WWW-Authenticate: Bearer`, a key without the scope a route needs is a 403 (for
every route of ROUTE_SCOPES), a revoked key stops working (at once without a cache, within the
cache's lifetime with one), only the hash of a key is stored, and SIFT_API_KEYS keys act as admin
of the default tenant."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.auth import ROUTE_SCOPES
from services.config import DEFAULT_TENANT
from services.db.migrate import upgrade
from services.db.models import ApiKey, Event
from services.runtime import Runtime
from services.tenancy import tenants
from tests.conftest import api_key, settings_for


@pytest.fixture
def make_runtime(data_dir: Path) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        settings = settings_for(data_dir, **overrides)
        upgrade(settings.sqlalchemy_url)
        made.append(Runtime(settings))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(key_cache_s=0)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == "unauthorized"
    assert error["message"]


def ticket(event_id: str = "t1") -> dict[str, Any]:
    return {"events": [{"id": event_id, "kind": "ticket", "text": "where is my card?"}]}


def test_no_key_or_a_bad_key_is_a_401_with_the_error_envelope(client: TestClient, runtime: Runtime) -> None:
    response = client.get("/v1/events/t1")
    assert_unauthorized(response)
    assert "Authorization: Bearer" in response.json()["error"]["message"]
    assert_unauthorized(client.post("/v1/events", json=ticket()))
    malformed = client.post("/v1/events", content=b'{"events": [', headers={"content-type": "application/json"})
    assert_unauthorized(malformed)  # the key is checked before the body is read
    good = api_key(runtime)
    key_id = good.split("_")[1]
    for headers in (
        bearer("not-a-key"),
        bearer(""),
        bearer("sift_000000000000_" + "A" * 43),  # well-formed, unknown
        bearer(f"sift_{key_id}_" + "A" * 43),  # a real key's id with the wrong secret
        bearer(good + "x"),
        {"Authorization": f"Basic {good}"},  # not a bearer token
        {"Authorization": good},
        {"X-Api-Key": good},
    ):
        assert_unauthorized(client.get("/v1/stats", headers=headers))
    with runtime.db.session_scope() as s:  # nothing was written by the refused requests
        assert s.scalar(sa.select(sa.func.count()).select_from(Event)) == 0
    assert client.get("/v1/stats", headers=bearer(good)).status_code == 200


def test_health_readiness_and_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # 503: the model is not loaded in this app
    assert "www-authenticate" not in client.get("/readyz").headers
    assert client.get("/metrics").status_code == 200


def test_each_scope_opens_only_its_routes(client: TestClient, runtime: Runtime) -> None:
    ingest = bearer(api_key(runtime, scopes=("ingest",)))
    read = bearer(api_key(runtime, scopes=("read",)))
    label = bearer(api_key(runtime, scopes=("label",)))

    assert client.post("/v1/events", json=ticket(), headers=ingest).status_code == 202
    for method, path, body in (
        ("GET", "/v1/events/t1", None),
        ("PUT", "/v1/faqs/f1", {"question": "q?", "answer": "a"}),
        ("POST", "/v1/labels", {"labels": [{"event_id": "t1", "task": "intent", "label": "x"}]}),
    ):
        response = client.request(method, path, json=body, headers=ingest)
        assert response.status_code == 403, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden" and "ingest" in error["message"]
        assert "www-authenticate" not in response.headers

    assert client.get("/v1/events/t1", headers=read).json()["kind"] == "ticket"
    assert client.post("/v1/events", json=ticket("t2"), headers=read).status_code == 403
    labeled = {"labels": [{"event_id": "t1", "task": "sentiment", "label": "negative"}]}
    assert client.post("/v1/labels", json=labeled, headers=read).status_code == 403
    assert client.post("/v1/alerts/1/ack", headers=read).status_code == 403
    assert client.put("/v1/watchlist/ACME", json={"name": "Acme"}, headers=read).status_code == 403

    response = client.post("/v1/labels", json={"labels": [{"event_id": "t1", "task": "intent", "label": "x"}]})
    assert response.status_code == 401
    recorded = client.post(
        "/v1/labels",
        json={"labels": [{"text": "my card is lost", "task": "intent", "label": "lost_card"}]},
        headers=label,
    )
    assert recorded.status_code == 201, recorded.text
    assert client.post("/v1/alerts/1/ack", headers=label).status_code == 404  # allowed; there is no alert 1
    assert client.get("/v1/events/t1", headers=label).status_code == 403
    assert client.post("/v1/events", json=ticket("t3"), headers=label).status_code == 403


def _other_scopes(needed: str) -> tuple[str, ...]:
    return tuple(s for s in tenants.SCOPES if s not in (needed, "admin"))


@pytest.mark.parametrize(("method", "path"), sorted(ROUTE_SCOPES))
def test_every_route_refuses_a_key_without_its_scope(
    client: TestClient, runtime: Runtime, method: str, path: str
) -> None:
    needed = ROUTE_SCOPES[(method, path)]
    url = re.sub(r"\{[a-z_]+\}", "1", path)
    body: Any = {} if method in ("POST", "PUT") else None
    lacking = bearer(api_key(runtime, scopes=_other_scopes(needed)))
    response = client.request(method, url, json=body, headers=lacking)
    assert response.status_code == 403, (method, url, response.text)
    assert f"'{needed}' scope" in response.json()["error"]["message"]
    assert_unauthorized(client.request(method, url, json=body))
    if method in ("POST", "PUT") and path != "/v1/match:calibrate":  # (that one would load the model)
        allowed = bearer(api_key(runtime, scopes=(needed,)))
        response = client.request(method, url, json=body, headers=allowed)  # past the key, to the handler
        assert response.status_code in (404, 422), (method, url, response.text)


def test_a_revoked_key_is_refused_at_once_without_a_cache(client: TestClient, runtime: Runtime) -> None:
    token = api_key(runtime)
    assert client.get("/v1/stats", headers=bearer(token)).status_code == 200
    with runtime.control_db.session_scope() as s:
        tenants.revoke_key(s, key_id=token.split("_")[1])
    assert_unauthorized(client.get("/v1/stats", headers=bearer(token)))


def test_a_revoked_key_stops_working_within_the_cache_lifetime(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(key_cache_s=1.0)
    token = api_key(runtime)
    with TestClient(create_app(runtime, warm_model=False)) as client:
        assert client.get("/v1/stats", headers=bearer(token)).status_code == 200  # cached now
        with runtime.control_db.session_scope() as s:
            tenants.revoke_key(s, key_id=token.split("_")[1])
        revoked = time.monotonic()
        while client.get("/v1/stats", headers=bearer(token)).status_code == 200:
            assert time.monotonic() - revoked < 1.0 + 2.0, "the revoked key still works after the cache lifetime"
            time.sleep(0.05)
        assert_unauthorized(client.get("/v1/stats", headers=bearer(token)))


def test_a_long_cache_keeps_serving_a_revoked_key_until_it_expires(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(key_cache_s=3600)
    token = api_key(runtime)
    with TestClient(create_app(runtime, warm_model=False)) as client:
        assert client.get("/v1/stats", headers=bearer(token)).status_code == 200
        with runtime.control_db.session_scope() as s:
            tenants.revoke_key(s, key_id=token.split("_")[1])
        assert client.get("/v1/stats", headers=bearer(token)).status_code == 200  # SIFT_KEY_CACHE_S's trade-off
    with TestClient(create_app(runtime, warm_model=False)) as fresh:  # a new process: refused
        assert_unauthorized(fresh.get("/v1/stats", headers=bearer(token)))


def test_the_keys_table_holds_only_hashes(runtime: Runtime) -> None:
    tokens = [api_key(runtime), api_key(runtime, tenant="acme", scopes=("ingest", "read"))]
    with runtime.control_db.session_scope() as s:
        rows = list(s.execute(sa.text("SELECT * FROM api_keys")).mappings())
        keys = {k.id: k for k in s.scalars(sa.select(ApiKey))}
    assert len(rows) == 2
    dump = repr(rows)
    for token in tokens:
        key_id, secret = token.split("_", 2)[1:]
        assert token not in dump and secret not in dump
        assert keys[key_id].hash == tenants.token_hash(token)
    assert {tuple(k.scopes) for k in keys.values()} == {("admin",), ("ingest", "read")}
    assert {k.tenant for k in keys.values()} == {DEFAULT_TENANT, "acme"}


def test_env_keys_act_as_admin_of_the_default_tenant(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(api_keys="k1, k2", key_cache_s=0)
    runtime.create_tenant("acme")
    with TestClient(create_app(runtime, warm_model=False)) as client:
        for key in ("k1", "k2"):
            assert client.post("/v1/events", json=ticket(f"from-{key}"), headers=bearer(key)).status_code == 202
            assert client.put("/v1/watchlist/ACME", json={"name": "Acme"}, headers=bearer(key)).status_code == 200
        assert_unauthorized(client.get("/v1/stats", headers=bearer("k3")))
        assert_unauthorized(client.get("/v1/stats", headers=bearer("k1,k2")))
        acme = bearer(api_key(runtime, tenant="acme"))
        assert client.get("/v1/events/from-k1", headers=acme).status_code == 404  # not acme's
        assert client.get("/v1/watchlist", headers=acme).json()["entities"] == []
    with runtime.db.session_scope() as s:  # the default tenant's tables
        assert set(s.scalars(sa.select(Event.id))) == {"from-k1", "from-k2"}
