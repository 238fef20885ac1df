"""The ingest task body, called directly, on SQLite and embedded Qdrant with the real model:
a poison event fails alone, a re-delivered batch changes nothing, a store outage is retried."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.db import events as repo
from services.db.models import Event
from services.embedding.encoder import Encoder
from services.errors import BrokerUnavailable, VectorStoreUnavailable
from services.events import accept as ingest
from services.runtime import Runtime
from services.task_names import ALERTS_PROCESS
from tests.conftest import open_runtime, settings_for
from tests.recording import RecordingSender, run_batch

LIMITS = ingest.Limits(max_events=1000, max_text_chars=10_000)


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir), encoder) as rt:
        yield rt


def accept(rt: Runtime, texts: list[str], kind: str = "ticket") -> list[str]:
    events = [ingest.EventIn(id=f"{kind}-{i}", kind=kind, text=t) for i, t in enumerate(texts)]  # type: ignore[arg-type]
    with rt.db.session_scope() as s:
        return ingest.accept(s, events=events, limits=LIMITS).ids


def statuses(rt: Runtime) -> dict[str, str]:
    with rt.db.session_scope() as s:
        return {e.id: e.status for e in s.query(Event).all()}


def test_a_batch_ends_done_in_sql_and_in_qdrant(runtime: Runtime) -> None:
    ids = accept(runtime, [f"where is my card {i}" for i in range(40)])
    assert run_batch(ids) == {"done": 40, "failed": 0}
    assert set(statuses(runtime).values()) == {"done"}
    store = runtime.store
    assert store.count("sift_ticket") == 40
    hit = store.retrieve("sift_ticket", [ingest.point_id_for("ticket-3", tenant=runtime.tenant)], with_vectors=True)[0]
    assert hit.payload["event_id"] == "ticket-3" and hit.payload["text"] == "where is my card 3"
    assert hit.vector is not None and abs(float(np.linalg.norm(hit.vector)) - 1.0) < 1e-4
    assert store.search("sift_ticket", hit.vector, limit=1)[0].payload["event_id"] == "ticket-3"


def test_a_redelivered_batch_is_a_no_op(runtime: Runtime) -> None:
    ids = accept(runtime, ["first", "second"])
    run_batch(ids)
    assert run_batch(ids) == {"done": 0, "failed": 0}
    assert runtime.store.count("sift_ticket") == 2


def test_a_poison_event_fails_alone_with_its_error(runtime: Runtime) -> None:
    def poison_step(model: Any, events: Sequence[Event], vectors: np.ndarray, _: Any) -> list[dict[str, Any]]:
        assert model.kind == "ticket" and len(vectors) == len(events)
        if any("POISON" in event.text for event in events):
            raise ValueError("cannot handle this event")
        return [{"length": {"label": "short" if len(event.text) < 20 else "long"}} for event in events]

    runtime.pipeline.steps = {"ticket": [poison_step]}
    ids = accept(runtime, ["fine one", "POISON pill", "fine two, a longer text here"])
    assert run_batch(ids) == {"done": 2, "failed": 1}
    with runtime.db.session_scope() as s:
        bad = repo.get(s, event_id="ticket-1")
        good = repo.get(s, event_id="ticket-2")
        assert bad is not None and bad.status == "failed"
        assert bad.error == "step: ValueError: cannot handle this event"
        assert good is not None and good.predictions == {"length": {"label": "long"}}
    assert runtime.store.count("sift_ticket") == 2
    assert runtime.store.count("sift_ticket", filters={"event_id": "ticket-1"}) == 0


class FlakyStore:
    """A real store whose upserts fail while `down` is set: the vector store being unreachable."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down = inner, True

    def upsert(self, name: str, points: Any) -> None:
        if self.down:
            raise VectorStoreUnavailable("connection refused")
        self.inner.upsert(name, points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_store_outage_propagates_for_retry_and_the_retry_completes(runtime: Runtime) -> None:
    flaky = FlakyStore(runtime.store)
    runtime.pipeline.store = flaky  # type: ignore[assignment]
    ids = accept(runtime, ["a", "b", "c"])
    with pytest.raises(VectorStoreUnavailable):
        run_batch(ids)
    assert set(statuses(runtime).values()) == {"queued"}  # released for the retry, nothing marked done
    flaky.down = False
    assert run_batch(ids) == {"done": 3, "failed": 0}
    assert runtime.store.count("sift_ticket") == 3


def test_done_news_is_followed_by_the_alerts_task_and_tickets_by_nothing(runtime: Runtime) -> None:
    news = accept(runtime, ["ACME shares fall after the recall", "ACME beats estimates"], kind="news")
    tickets = accept(runtime, ["where is my card"])
    sender = RecordingSender()
    assert run_batch(news + tickets, send=sender) == {"done": 3, "failed": 0}
    assert sender.sent == [(ALERTS_PROCESS, (news, runtime.tenant))]


def test_a_broker_down_after_the_batch_loses_nothing(runtime: Runtime) -> None:
    def down(name: str, *args: Any) -> None:
        raise BrokerUnavailable("broker unavailable: connection refused")

    news = accept(runtime, ["ACME shares fall after the recall"], kind="news")
    assert run_batch(news, send=down) == {"done": 1, "failed": 0}  # the alerts task waits for the sweep
    assert statuses(runtime) == {news[0]: "done"}
