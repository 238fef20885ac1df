"""The learned recommender end to end, with the real model, embedded Qdrant and SQLite or
PostgreSQL: a `recommend` training run through the API, promotion only when the new blend is
better, rollback, hot reload in another process's recommender, new items still served through
content, and a user with only dismissals."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.api.app import create_app
from services.cli.app import app as cli
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.recommend import interactions
from services.recommend.feeds import Recommender
from services.runtime import Runtime
from services.task_names import TRAIN_RUN
from services.training import schedule
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import RecordingSender, run_batch

START = datetime(2026, 6, 1, tzinfo=UTC)
TOPICS = ["running shoes", "kitchen knives", "crime novels", "headphones", "yoga mats", "garden tools"]
# Items carry no hint of what follows them: "product 7 for running shoes" is followed by a fixed,
# unrelated item (co-purchase partners the text cannot reveal), which the learned model picks up.
ITEMS = [f"p{n}" for n in range(36)]


def _partner(n: int) -> int:
    return (n * 7 + 3) % len(ITEMS)


def _histories(users: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        item = int(rng.integers(len(ITEMS)))
        history = [item]
        while len(history) < 8:
            item = _partner(item) if rng.random() < 0.8 else int(rng.integers(len(ITEMS)))
            if item not in history:
                history.append(item)
        out[f"u{u}"] = [ITEMS[k] for k in history]
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    url = str(request.getfixturevalue("pg_url")) if request.param == "postgresql" else None
    extra: dict[str, Any] = {"database_url": url} if url else {}
    with open_runtime(
        settings_for(data_dir, model_reload_s=0.2, recommend_train_min_new_interactions=100, **extra), encoder
    ) as rt:
        events = [
            ingest.EventIn(id=item, kind="product", text=f"product {n} for {TOPICS[n % len(TOPICS)]}")
            for n, item in enumerate(ITEMS)
        ]
        events += [
            ingest.EventIn(id="tent-1", kind="product", text="lightweight two person camping tent"),
            ingest.EventIn(id="tent-2", kind="product", text="four person family camping tent with porch"),
        ]
        with rt.db.session_scope() as s:
            ingest.accept(s, events=events, limits=ingest.Limits(max_events=100, max_text_chars=1000))
        assert run_batch([e.id for e in events if e.id])["done"] == len(events)
        _store(rt, _histories(60, seed=0))
        yield rt


def _store(rt: Runtime, histories: dict[str, list[str]], kind: str = "purchase") -> None:
    rows = [
        interactions.InteractionIn(user_id=user, item_id=item, type=kind, ts=START + timedelta(minutes=n))
        for user, items in histories.items()
        for n, item in enumerate(items)
    ]
    with rt.db.session_scope() as s:
        interactions.record(s, interactions=rows, now=datetime.now(UTC), pair_window=20, max_per_request=len(rows))


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as test_client:
        authorize(test_client, runtime)
        yield test_client


def _train(client: TestClient, runtime: Runtime) -> dict[str, Any]:
    """A run through the API (queued), executed in place as the train worker would."""
    response = client.post("/v1/training/runs", json={"task": "recommend"})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    runtime.trainer.run(run_id, send=lambda *_: None)
    run = client.get(f"/v1/training/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    return dict(run)


def _recommend_versions(client: TestClient) -> dict[str, str]:
    models = client.get("/v1/models", params={"task": "recommend"}).json()["models"]
    return {m["version"]: m["status"] for m in models}


def test_a_run_promotes_only_a_better_blend_and_rolls_back(client: TestClient, runtime: Runtime) -> None:
    first = _train(client, runtime)
    m = first["metrics"]
    assert m["learned"]["ndcg@10"] > m["content"]["ndcg@10"]  # partners the text cannot reveal
    assert first["promoted"] is (m["ndcg@10"] > m["hand_set_blend"]["ndcg@10"])
    assert first["promoted"], m  # the partners are learned: the new blend beats the hand-set one
    assert set(m["weights"]) >= {"learned", "content", "cooccurrence", "popularity"}
    assert _recommend_versions(client) == {first["model_version"]: "active"}
    listed = client.get("/v1/models").json()["models"]
    assert any(v["task"] == "recommend" and v["metrics"]["ndcg@10"] == m["ndcg@10"] for v in listed)
    shown = CliRunner().invoke(cli, ["models", "list", "--task", "recommend"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and f"HR@10 {m['hr@10']} NDCG@10 {m['ndcg@10']}" in shown.output, shown.output

    second = _train(client, runtime)  # the same interactions: not better than the serving version
    assert not second["promoted"] and second["metrics"]["baseline"]["version"] == first["model_version"]
    assert _recommend_versions(client) == {first["model_version"]: "active", second["model_version"]: "rejected"}

    result = CliRunner().invoke(cli, ["models", "activate", second["model_version"]])  # rollback (or forward)
    assert result.exit_code == 0, result.output
    assert _recommend_versions(client) == {first["model_version"]: "retired", second["model_version"]: "active"}
    back = client.post(f"/v1/models/{first['model_version']}/activate")
    assert back.status_code == 200 and back.json() == {
        "version": first["model_version"],
        "status": "active",
        "reindex_job": None,
    }


def test_another_process_reloads_the_promoted_model(client: TestClient, runtime: Runtime) -> None:
    other = Recommender(
        settings=runtime.settings,
        store=runtime.store,
        models=runtime.models,
        sessions=runtime.db.session_scope,
        reads=runtime.db.read_scope,
    )
    history = _histories(60, seed=0)["u0"]
    item, partner = history[-1], ITEMS[_partner(ITEMS.index(history[-1]))]
    before = {s.candidate.item_id: s for s in other.rank(user_id="u0", item_ids=ITEMS)}
    assert other.served.get() is None and before[partner].learned == 0.0
    run = _train(client, runtime)
    assert run["promoted"]
    time.sleep(0.3)
    after = {s.candidate.item_id: s for s in other.rank(user_id="u0", item_ids=ITEMS)}
    served = other.served.get()
    assert served is not None and served[0] == run["model_version"]
    assert after[partner].learned > 0 and item != partner


def test_new_items_still_come_through_content(client: TestClient, runtime: Runtime) -> None:
    run = _train(client, runtime)
    assert run["promoted"] and run["metrics"]["weights"]["content"] > 0
    # Nobody had touched the tents when the model was trained: only content knows them.
    _store(runtime, {"camper": ["tent-1"]}, kind="like")
    feed = client.get("/v1/users/camper/feed", params={"limit": 5}).json()["items"]
    assert "tent-2" in [i["item_id"] for i in feed], feed
    reason = next(i["reason"] for i in feed if i["item_id"] == "tent-2")
    assert reason == "because you liked “lightweight two person camping tent”"
    ranked = client.post("/v1/users/camper/rank", json={"item_ids": ["p2", "tent-2", "p4"]}).json()["items"]
    assert ranked[0]["item_id"] == "tent-2"


def test_a_user_with_only_dismissals_gets_a_feed_without_them(client: TestClient, runtime: Runtime) -> None:
    assert _train(client, runtime)["promoted"]
    _store(runtime, {"grump": ["p0", "p6"]}, kind="dismiss")
    feed = client.get("/v1/users/grump/feed", params={"limit": 10}).json()["items"]
    shown = [i["item_id"] for i in feed]
    assert len(shown) == 10 and not {"p0", "p6"} & set(shown)
    assert client.post("/v1/users/grump/rank", json={"item_ids": ITEMS}).status_code == 200
    scored = {s.candidate.item_id: s for s in runtime.recommender.rank(user_id="grump", item_ids=ITEMS)}
    assert scored[ITEMS[_partner(0)]].learned < 0  # a dismissal counts against what goes with it


def test_the_beat_starts_a_run_when_enough_new_interactions_arrived(runtime: Runtime) -> None:
    send = RecordingSender()
    check = {"reindexer": runtime.reindexer, "trainer": runtime.trainer, "settings": runtime.settings, "send": send}
    started = schedule.check(runtime.db.session_scope, **check)["runs"]
    assert len(started) == 1 and send.named(TRAIN_RUN) == [(started[0], runtime.tenant)]
    assert schedule.check(runtime.db.session_scope, **check)["runs"] == []  # one run at a time
    runtime.trainer.run(str(started[0]), send=send)
    assert schedule.check(runtime.db.session_scope, **check)["runs"] == []  # nothing new since its snapshot


def test_a_version_whose_files_are_gone_leaves_feeds_on_the_hand_set_blend(
    client: TestClient, runtime: Runtime
) -> None:
    run = _train(client, runtime)
    assert run["promoted"]
    version = client.get("/v1/models", params={"task": "recommend"}).json()["models"][0]
    shutil.rmtree(version["artifact_path"])
    fresh = Recommender(
        settings=runtime.settings,
        store=runtime.store,
        models=runtime.models,
        sessions=runtime.db.session_scope,
        reads=runtime.db.read_scope,
    )
    ranked = fresh.rank(user_id="u0", item_ids=ITEMS)
    assert fresh.served.get() is None and all(s.learned == 0.0 for s in ranked)
