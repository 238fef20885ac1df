"""The reads the console is made of, on the embedded defaults: the latest events (a failed one with
its error), who a key is, the pipeline snapshot, users, training runs, an entity's sentiment
buckets; the console's files are served without a key and keep the page on this origin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.alerts import rules, watchlist
from services.api.app import create_app
from services.db import events as repo
from services.db.migrate import upgrade
from services.db.models import EntityLink, Interaction
from services.runtime import Runtime
from services.training import registry
from tests.conftest import api_key, authorize, settings_for

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    settings = settings_for(data_dir)
    upgrade(settings.sqlalchemy_url)
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as c:
        authorize(c, runtime)
        yield c


def process(runtime: Runtime, ids: list[str], *, fail: str | None = None) -> None:
    with runtime.db.session_scope() as s:
        claimed = repo.claim(s, ids=ids, now=NOW, stale_after_s=60)
        outcomes = [
            repo.Outcome(
                event_id=e.id,
                ok=fail is None,
                predictions={"intent": {"label": "card_arrival", "probs": {}}},
                model_version="m@1",
                content_hash=e.content_hash,
                error=fail,
            )
            for e in claimed
        ]
        repo.record(s, outcomes=outcomes, now=NOW)


def test_the_latest_events_filter_by_kind_and_status_and_show_errors(client: TestClient, runtime: Runtime) -> None:
    events = [{"id": f"t{i}", "kind": "ticket", "text": f"card {i} " + "x" * 400} for i in range(4)]
    events.append({"id": "n1", "kind": "news", "title": "Acme", "text": "Acme falls"})
    assert client.post("/v1/events", json={"events": events}).status_code == 202
    process(runtime, ["t0", "t1"])
    process(runtime, ["t2"], fail="the text could not be encoded")
    listed = client.get("/v1/events").json()["events"]
    assert [e["id"] for e in listed[:2]] == ["t3", "n1"] or {e["id"] for e in listed[:2]} == {"t3", "n1"}
    assert {e["id"] for e in listed} == {"t0", "t1", "t2", "t3", "n1"}  # unfinished first, then finished
    assert [e["status"] for e in listed][:2] == ["queued", "queued"]
    failed = client.get("/v1/events?status=failed").json()["events"]
    assert [(e["id"], e["error"]) for e in failed] == [("t2", "the text could not be encoded")]
    done = client.get("/v1/events?kind=ticket&status=done&limit=1").json()["events"]
    assert len(done) == 1 and done[0]["predictions"]["intent"]["label"] == "card_arrival"
    assert len(done[0]["text"]) == 300
    assert [e["id"] for e in client.get("/v1/events?kind=news").json()["events"]] == ["n1"]
    bad = client.get("/v1/events?status=lost")
    assert bad.status_code == 422 and "status" in bad.text


def test_whoami_and_the_pipeline_snapshot_are_the_callers_tenant(client: TestClient, runtime: Runtime) -> None:
    assert client.post("/v1/events", json={"events": [{"id": "a", "kind": "ticket", "text": "hi"}]}).status_code == 202
    process(runtime, ["a"])
    me = client.get("/v1/whoami").json()
    assert me["tenant"] == "default" and me["scopes"] == ["admin"]
    snap = client.get("/v1/pipeline").json()
    assert snap["events"] == {"ticket": {"done": 1}} and snap["finished"] == 1
    assert set(snap["queues"]) == {"ingest", "alerts", "train"}
    assert set(snap["batches"]) == {"count", "sum"} and snap["active"] == []
    # what this process serves is process-wide state (other tests' models may be loaded): its shape only
    assert all(set(s) == {"task", "kind", "version", "encoder"} for s in snap["serving"])
    other = {"Authorization": f"Bearer {api_key(runtime, tenant='other', scopes=('read',))}"}
    assert client.get("/v1/whoami", headers=other).json() == {
        "tenant": "other",
        "key_id": other["Authorization"].split("_")[1],
        "scopes": ["read"],
    }
    assert client.get("/v1/pipeline", headers=other).json()["events"] == {}
    assert client.get("/v1/events", headers=other).json()["events"] == []
    ingest_only = {"Authorization": f"Bearer {api_key(runtime, scopes=('ingest',))}"}
    assert client.get("/v1/whoami", headers=ingest_only).status_code == 403
    assert client.get("/v1/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_users_runs_and_sentiment_buckets(client: TestClient, runtime: Runtime) -> None:
    with runtime.db.session_scope() as s:
        for i, (user, minutes) in enumerate((("ann", 1), ("bob", 2), ("ann", 3))):
            ts = NOW + timedelta(minutes=minutes)
            s.add(
                Interaction(id=f"i{i}", user_id=user, item_id="p1", kind="product", type="view", ts=ts, created_at=ts)
            )
        watchlist.put(s, entity="ACME", body=watchlist.WatchIn(name="Acme"))
        for i, (sentiment, minutes) in enumerate((("negative", 1), ("negative", 2), ("positive", 70))):
            when = NOW + timedelta(minutes=minutes)
            s.add(EntityLink(event_id=f"n{i}", entity="ACME", method="producer", sentiment=sentiment, occurred_at=when))
        s.flush()
        for start in (NOW, NOW + timedelta(hours=1)):
            rules._recount(s, entity="ACME", width=3600, start=start, now=NOW)
        registry.new_run(s, task="sentiment", now=NOW)
    users = client.get("/v1/users").json()["users"]
    assert [(u["user_id"], u["interactions"]) for u in users] == [("ann", 2), ("bob", 1)]
    runs = client.get("/v1/training/runs?task=sentiment").json()["runs"]
    assert [(r["task"], r["status"]) for r in runs] == [("sentiment", "queued")]
    assert client.get("/v1/training/runs?task=intent").json()["runs"] == []
    sentiment = client.get("/v1/watchlist/ACME/sentiment?width_s=3600").json()
    assert sentiment["widths_s"] == [300, 3600]
    assert [(b["negative"], b["positive"]) for b in sentiment["buckets"]] == [(2, 0), (0, 1)]
    bad = client.get("/v1/watchlist/ACME/sentiment?width_s=60")
    assert bad.status_code == 422 and "300, 3600" in bad.json()["error"]["message"]


def test_the_console_is_served_without_a_key_and_stays_on_this_origin(client: TestClient) -> None:
    del client.headers["Authorization"]
    page = client.get("/console/")
    assert page.status_code == 200 and "<title>Sift console</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("console.js", "charts.js", "console.css"):
        served = client.get(f"/console/{asset}")
        assert served.status_code == 200 and "http://" not in served.text.replace("http://www.w3.org/2000/svg", "")
    assert client.get("/console", follow_redirects=False).status_code in (307, 308)
    assert client.get("/v1/whoami").status_code == 401
