"""Sentiment alerting on a real database: entity links at ingest, idempotent buckets, late
events, each rule firing and not firing, dedupe, cooldown, acknowledgement, the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.alerts import flow as alert_flow
from services.alerts import rules as alerts
from services.alerts import signing, watchlist, webhooks
from services.api.app import create_app
from services.config import DEFAULT_TENANT
from services.db.models import Alert, Event, SentimentBucket, WebhookDelivery, as_utc
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.runtime import Runtime
from services.task_names import WEBHOOK_DELIVER
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import RecordingSender, run_batch
from worker import tasks

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PROBS = {
    "negative": {"negative": 0.9, "neutral": 0.08, "positive": 0.02},
    "neutral": {"negative": 0.1, "neutral": 0.8, "positive": 0.1},
    "positive": {"negative": 0.02, "neutral": 0.08, "positive": 0.9},
}


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir, model_reload_s=0.1), encoder) as rt:
        with rt.db.session_scope() as s:
            watchlist.put(s, entity="ACME", body=watchlist.WatchIn(name="Acme Corporation", ticker="ACME"))
        yield rt


class Stream:
    """News for one entity, written as processed events with chosen sentiment and times."""

    def __init__(self, rt: Runtime, entity: str = "ACME") -> None:
        self.rt, self.entity, self.n = rt, entity, 0

    def add(self, labels: list[str], *, start: datetime, every: timedelta) -> list[str]:
        ids = []
        with self.rt.db.session_scope() as s:
            for i, label in enumerate(labels):
                self.n += 1
                event_id = f"{self.entity}-{self.n}"
                s.add(news(event_id, self.entity, label, start + i * every))
                ids.append(event_id)
        return ids

    def evaluate(self, now: datetime | None = None) -> list[alerts.Change]:
        with self.rt.db.session_scope() as s:
            return alerts.evaluate(s, entity=self.entity, settings=self.rt.settings, now=now or T0)


def news(event_id: str, entity: str, label: str, when: datetime) -> Event:
    return Event(
        id=event_id,
        point_id=ingest.point_id_for(event_id, tenant=DEFAULT_TENANT),
        kind="news",
        text=f"{entity} news {event_id}",
        content_hash=event_id,
        occurred_at=when,
        received_at=when,
        enqueued_at=when,
        status="done",
        predictions={
            "sentiment": {"label": label, "probs": PROBS[label]},
            "entity_links": [{"entity": entity, "method": "producer"}],
        },
    )


def record(rt: Runtime, ids: list[str]) -> set[str]:
    with rt.db.session_scope() as s:
        return alerts.record_links(s, event_ids=ids, settings=rt.settings, now=T0)


def open_alerts(rt: Runtime) -> dict[str, Alert]:
    with rt.db.session_scope() as s:
        return {a.rule: a for a in alerts.list_alerts(s, state="open")}


def calm(stream: Stream, hours: int) -> list[str]:
    """A calm day: ten news an hour, one in ten negative, three positive."""
    mix = [
        "neutral",
        "positive",
        "neutral",
        "negative",
        "neutral",
        "positive",
        "neutral",
        "positive",
        "neutral",
        "neutral",
    ]
    return stream.add(mix * hours, start=T0 - timedelta(hours=hours), every=timedelta(minutes=6))


def test_news_is_linked_at_ingest(runtime: Runtime) -> None:
    events = [
        ingest.EventIn(id="n1", kind="news", text="Acme Corporation shares fell 5% after a profit warning"),  # type: ignore[arg-type]
        ingest.EventIn(id="n2", kind="news", text="Peel the apples and bake the acme of pies"),  # type: ignore[arg-type]
        ingest.EventIn(id="n3", kind="news", text="Quiet day", entities=["acme", "UNKNOWN"]),  # type: ignore[arg-type]
    ]
    with runtime.db.session_scope() as s:
        ingest.accept(s, events=events, limits=ingest.Limits(max_events=10, max_text_chars=1000))
    run_batch(["n1", "n2", "n3"])
    with runtime.db.session_scope() as s:
        links = {e.id: e.predictions["entity_links"] for e in s.query(Event).order_by(Event.id)}
    assert links == {
        "n1": [{"entity": "ACME", "method": "name"}],
        "n2": [],
        "n3": [{"entity": "ACME", "method": "producer"}],
    }
    assert record(runtime, ["n1", "n2", "n3"]) == {"ACME"}


def test_buckets_count_each_event_once_and_late_events_land_in_their_own_bucket(runtime: Runtime) -> None:
    stream = Stream(runtime)
    ids = stream.add(["negative", "positive", "neutral"], start=T0, every=timedelta(minutes=1))
    record(runtime, ids)
    record(runtime, ids)  # re-processed: counts stay
    late = stream.add(["negative"], start=T0 - timedelta(hours=2), every=timedelta(0))
    record(runtime, late)
    with runtime.db.session_scope() as s:
        five = {
            as_utc(b.start): (b.negative, b.neutral, b.positive)
            for b in s.query(SentimentBucket).filter_by(width_s=300)
        }
        hour = alerts.buckets(
            s, entity="ACME", width_s=3600, since=T0 - timedelta(hours=3), until=T0 + timedelta(hours=1)
        )
    assert five == {T0: (1, 1, 1), T0 - timedelta(hours=2): (1, 0, 0)}
    assert [(as_utc(b.start), b.negative + b.neutral + b.positive) for b in hour] == [
        (T0 - timedelta(hours=2), 1),
        (T0, 3),
    ]


def test_a_calm_stream_raises_nothing(runtime: Runtime) -> None:
    stream = Stream(runtime)
    record(runtime, calm(stream, 24))
    assert stream.evaluate() == [] and open_alerts(runtime) == {}


def test_a_negative_burst_raises_one_alert_per_rule_and_it_clears(runtime: Runtime) -> None:
    stream = Stream(runtime)
    record(runtime, calm(stream, 24))
    burst = stream.add(["negative"] * 8, start=T0, every=timedelta(minutes=2))
    record(runtime, burst)
    raised = stream.evaluate()
    assert {c.event_type for c in raised} == {"alert.raised"}
    opened = open_alerts(runtime)
    assert {"negative_share", "negative_spike", "sentiment_drop"} <= set(opened)
    share = opened["negative_share"]
    assert share.figures["negatives"] == 8 and set(burst) <= set(share.event_ids)
    assert share.severity == "medium" and opened["negative_spike"].severity == "high"

    more = stream.add(["negative"] * 2, start=T0 + timedelta(minutes=16), every=timedelta(minutes=1))
    record(runtime, more)
    assert stream.evaluate() == []  # still holding: the open alerts are updated, not repeated
    assert set(more) <= set(open_alerts(runtime)["negative_share"].event_ids)

    recovery = stream.add(["positive", "neutral"] * 10, start=T0 + timedelta(minutes=50), every=timedelta(minutes=1))
    record(runtime, recovery)
    cleared = stream.evaluate()
    assert {c.event_type for c in cleared} == {"alert.cleared"} and open_alerts(runtime) == {}


def test_a_spike_against_a_busy_baseline_needs_a_real_jump(runtime: Runtime) -> None:
    runtime.settings.alert_negative_share = 0.99  # only the spike rule can fire here
    runtime.settings.alert_drop = 2.0
    stream = Stream(runtime)
    # Three negatives in every half hour for a day, among plenty of other news.
    day = stream.add(
        (["negative"] * 3 + ["positive"] * 7) * 48, start=T0 - timedelta(hours=24), every=timedelta(minutes=3)
    )
    record(runtime, day)
    usual = stream.add(["negative"] * 4 + ["positive"] * 6, start=T0, every=timedelta(minutes=2))
    record(runtime, usual)
    assert stream.evaluate() == []  # 4 against a median of 3: not a spike
    jump = stream.add(["negative"] * 6, start=T0 + timedelta(minutes=21), every=timedelta(minutes=1))
    record(runtime, jump)
    assert [c.event_type for c in stream.evaluate()] == ["alert.raised"]
    assert set(open_alerts(runtime)) == {"negative_spike"}


def test_a_sharp_drop_of_mean_sentiment_fires_without_negative_labels(runtime: Runtime) -> None:
    runtime.settings.alert_spike_z = 100.0
    stream = Stream(runtime)
    record(runtime, stream.add(["positive"] * 20, start=T0 - timedelta(hours=5), every=timedelta(minutes=10)))
    record(runtime, stream.add(["neutral"] * 6, start=T0, every=timedelta(minutes=2)))
    stream.evaluate()
    assert open_alerts(runtime) == {}  # 20 news are too thin a baseline (4 x min_volume = 24)
    record(runtime, stream.add(["positive"] * 10, start=T0 - timedelta(hours=1), every=timedelta(minutes=2)))
    stream.evaluate()
    opened = open_alerts(runtime)
    assert set(opened) == {"sentiment_drop"} and opened["sentiment_drop"].figures["drop"] >= 0.7


def test_acknowledged_alerts_cool_down_and_overrides_apply(runtime: Runtime, data_dir: Path) -> None:
    stream = Stream(runtime)
    record(runtime, stream.add(["negative"] * 6, start=T0, every=timedelta(minutes=1)))
    stream.evaluate()
    alert_id = open_alerts(runtime)["negative_share"].id
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        acked = client.post(f"/v1/alerts/{alert_id}/ack")
        assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
        assert client.post(f"/v1/alerts/{alert_id}/ack").status_code == 409
        assert client.post("/v1/alerts/999999/ack").status_code == 404
        listed = client.get("/v1/alerts", params={"entity": "ACME", "state": "acknowledged"}).json()["alerts"]
        assert [a["id"] for a in listed] == [alert_id] and listed[0]["event_ids"]
        assert client.get("/v1/alerts", params={"state": "bogus"}).status_code == 422

        # The condition still holds, but the rule cools down after the acknowledgement (wall clock).
        acked_at = datetime.now(UTC)
        stream.evaluate(now=acked_at + timedelta(minutes=10))
        assert "negative_share" not in open_alerts(runtime)
        stream.evaluate(now=acked_at + timedelta(hours=2))  # cooldown over: a new alert
        assert "negative_share" in open_alerts(runtime)

        off = {"name": "Acme Corporation", "ticker": "ACME", "rules": {"negative_share": {"enabled": False}}}
        assert client.put("/v1/watchlist/ACME", json=off).status_code == 200
        bad = {"name": "X", "rules": {"negative_share": {"colour": 1}}}
        assert "unknown keys" in client.put("/v1/watchlist/X", json=bad).text
        assert client.put("/v1/watchlist/X", json={"name": "X", "rules": {"nope": {}}}).status_code == 422
        assert client.put("/v1/watchlist/X", json={"name": "X", "ticker": "lower"}).status_code == 422
        assert client.get("/v1/watchlist/X").status_code == 404
        assert [e["entity"] for e in client.get("/v1/watchlist").json()["entities"]] == ["ACME"]
    stream.evaluate(now=datetime.now(UTC) + timedelta(hours=2, minutes=1))
    assert "negative_share" not in open_alerts(runtime)  # disabled for ACME: the open one clears


def test_two_evaluations_at_once_open_one_alert(runtime: Runtime) -> None:
    stream = Stream(runtime)
    record(runtime, stream.add(["negative"] * 6, start=T0, every=timedelta(minutes=1)))
    with runtime.db.session_scope() as s:
        first, second = (
            alerts.open_alert(s, _new("ACME", runtime), cooldown_s=runtime.settings.alert_cooldown_s, now=T0)
            for _ in range(2)
        )
    assert first is not None and second is None


def _fired() -> Any:
    return alerts.Fired("negative_share", True, "medium", {}, [])


def _new(entity: str, runtime: Runtime) -> Any:
    return alerts._new_alert(entity, _fired(), as_of=T0, settings=runtime.settings, now=T0)


def process_news(runtime: Runtime, event_ids: list[str], sender: RecordingSender) -> dict[str, object]:
    """What the alerts task does, its deliveries recorded by sender."""
    settings, now = runtime.settings, datetime.now(UTC)
    return alert_flow.process_news(
        runtime.db.session_scope, event_ids=event_ids, settings=settings, now=now, send=sender
    )


def test_the_alerts_task_raises_and_delivers_once_to_a_webhook(runtime: Runtime) -> None:
    from tests.integration.test_webhooks import SECRET, Receiver

    runtime.settings.webhook_allow_private = True
    receiver = Receiver([500, 200])
    sender = RecordingSender()  # the broker's part
    try:
        with runtime.db.session_scope() as s:
            body = webhooks.WebhookIn(url=receiver.url, secret=SECRET)  # type: ignore[call-arg]
            webhooks.put_webhook(s, webhook_id="risk-desk", body=body, allow_private=True)
        stream = Stream(runtime)
        burst = stream.add(["negative"] * 8, start=datetime.now(UTC), every=timedelta(minutes=1))
        assert process_news(runtime, burst, sender)["changes"] >= 1
        assert process_news(runtime, burst, sender)["changes"] == 0  # re-processed: nothing new, nothing re-sent
        deliveries = [args[0] for args in sender.named(WEBHOOK_DELIVER)]
        assert len(deliveries) == len(open_alerts(runtime)) >= 1
        first = deliveries[0]
        assert tasks.webhook_deliver.run(first) == "pending"  # 500: recorded, retried later
        with runtime.db.session_scope() as s:
            s.execute(sa.update(WebhookDelivery).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert tasks.webhook_deliver.run(first) == "delivered"
        assert tasks.webhook_deliver.run(first) == "delivered"  # a duplicate message sends nothing
        keys = {headers["X-Sift-Idempotency-Key"] for headers, _ in receiver.requests}
        assert receiver.answered == [500, 200] and len(keys) == 1
        headers, payload = receiver.requests[-1]
        Webhook(signing.whsec(SECRET)).verify(payload, headers)  # a receiver's check, with the spec's library
        assert json.loads(payload)["alert"]["entity"] == "ACME"
    finally:
        receiver.close()


def test_the_sweep_evaluates_news_whose_alerts_message_was_lost(runtime: Runtime) -> None:
    burst = Stream(runtime).add(["negative"] * 8, start=datetime.now(UTC), every=timedelta(minutes=1))
    with runtime.db.session_scope() as s:  # linked by the ingest batch; its alerts message never came
        alerts.record_links(s, event_ids=burst, settings=runtime.settings, now=datetime.now(UTC))
    assert open_alerts(runtime) == {}
    sender = RecordingSender()
    changes, sent = alert_flow.sweep(
        runtime.db.session_scope, settings=runtime.settings, now=datetime.now(UTC), send=sender
    )
    assert changes >= 1 and sent == len(sender.named(WEBHOOK_DELIVER))
    assert "negative_share" in open_alerts(runtime)
    assert (
        alert_flow.sweep(runtime.db.session_scope, settings=runtime.settings, now=datetime.now(UTC), send=sender)[0]
        == 0
    )
