"""What the API gives away: headers are bounded (431), an unavailable dependency is named without
its address, /metrics can be closed with a token and shows tenant names only when asked, and a
refused webhook URL does not say what an internal name resolves to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services import metrics
from services.alerts import targets
from services.api.app import create_app
from services.db.migrate import upgrade
from services.embedding.encoder import Encoder
from services.errors import InvalidInput
from services.runtime import Runtime
from tests.conftest import settings_for

KEY = "test-root-key-0123456789"


@pytest.fixture
def client(data_dir: Path, encoder: Encoder) -> Iterator[TestClient]:
    settings = settings_for(data_dir, api_keys=KEY, metrics_token="scrape-me", max_header_bytes=8192)
    upgrade(settings.sqlalchemy_url)
    rt = Runtime(settings)
    rt._made["encoder"] = encoder
    with TestClient(create_app(rt, warm_model=False)) as c:
        c.headers["Authorization"] = f"Bearer {KEY}"
        yield c
    rt.close()


def test_headers_over_the_limits_are_a_431_that_names_them(client: TestClient) -> None:
    assert client.get("/v1/stats").status_code == 200
    big = client.get("/v1/stats", headers={"X-Big": "a" * 8192})
    assert big.status_code == 431 and "SIFT_MAX_HEADER_BYTES" in big.json()["error"]["message"]
    many = client.get("/v1/stats", headers={f"X-H{i}": "1" for i in range(10_000)})
    assert many.status_code == 431 and "SIFT_MAX_HEADERS" in many.json()["error"]["message"]
    long_line = client.get("/v1/stats?q=" + "b" * 9000)
    assert long_line.status_code == 431


def test_metrics_need_the_token_when_one_is_set_and_tenant_names_are_opt_in(client: TestClient) -> None:
    client.headers.pop("Authorization")
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "SIFT_METRICS_TOKEN" in refused.json()["error"]["message"]
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    metrics.set_drift("acmesecret", "intent", score=0.1, label_divergence=None, embedding_distance=None, at=1.0)
    scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert scraped.status_code == 200 and "sift_drift_score" in scraped.text
    assert "acmesecret" not in scraped.text and metrics.tenant_label("acmesecret") in scraped.text
    metrics.show_tenant_names(True)
    try:
        assert metrics.tenant_label("acmesecret") == "acmesecret"
    finally:
        metrics.show_tenant_names(False)


def test_an_unavailable_database_is_named_without_its_address(data_dir: Path, encoder: Encoder) -> None:
    settings = settings_for(data_dir, api_keys=KEY, database_url="postgresql+psycopg://u@127.0.0.1:9/nodb")
    rt = Runtime(settings)
    rt._made["encoder"] = encoder
    with TestClient(create_app(rt, warm_model=False)) as c:
        answer = c.get("/v1/stats", headers={"Authorization": f"Bearer {KEY}"})
        ready = c.get("/readyz")
    rt.close()
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == {
        "code": "database_unavailable",
        "message": "database unavailable; retry later",
        "details": None,
    }
    assert ready.status_code == 503 and ready.json()["checks"]["database"] == "database unavailable; retry later"
    assert "127.0.0.1" not in answer.text + ready.text and ":9" not in answer.text + ready.text


def test_a_refused_webhook_name_does_not_say_what_it_resolves_to() -> None:
    with pytest.raises(InvalidInput) as refused:
        targets.check_url("http://localhost:9/hook", allow_private=False)
    assert "127.0.0.1" not in refused.value.message and "::1" not in refused.value.message
    assert "loopback" in refused.value.message and "address" not in (refused.value.details or {})
    with pytest.raises(InvalidInput) as literal:
        targets.check_url("http://10.0.0.1/hook", allow_private=False)
    assert "10.0.0.1" in literal.value.message  # what the caller sent is no secret
