"""Model drift on PostgreSQL, embedded Qdrant and the real model: banking questions are the
reference; more of them score below the threshold, sports and weather news above it, against
the first events (no trained model) and against a trained model's snapshot. The beat task
opens a model_drift alert and clears it; GET /v1/drift measures on demand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.alerts import drift
from services.api.app import create_app
from services.classify.tasks import LabelDef, add_task
from services.db.models import Alert
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.runtime import Runtime
from services.training import labels, registry, runs
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import run_batch
from worker import tasks

THRESHOLD = 0.2
BANKING = [  # (text, intent)
    ("My new card has still not arrived, it has been two weeks", "card"),
    ("How long does it take for a card to be delivered?", "card"),
    ("I lost my card yesterday, can you block it?", "card"),
    ("Someone stole my wallet with my debit card inside", "card"),
    ("Why was I charged a fee for withdrawing cash?", "fees"),
    ("The ATM kept my card and did not give it back", "card"),
    ("I want to change the PIN of my card", "card"),
    ("My transfer to another bank has not gone through yet", "transfer"),
    ("How do I send money to a friend abroad?", "transfer"),
    ("What exchange rate do you use for euro payments?", "fees"),
    ("There is a payment on my statement that I do not recognise", "card"),
    ("I was charged twice for the same purchase", "fees"),
    ("Can I top up my account with a credit card?", "account"),
    ("My top-up failed but the money left my bank account", "account"),
    ("How do I verify my identity to open an account?", "account"),
    ("The app says my identity verification failed", "account"),
    ("I forgot my passcode and cannot log in", "account"),
    ("How can I close my account?", "account"),
    ("Is there a limit on how much I can withdraw per day?", "fees"),
    ("My card payment was declined at the supermarket", "card"),
    ("I would like a refund for an item I returned", "transfer"),
    ("The refund from the shop has not shown up in my account", "transfer"),
    ("How do I add money to my account by bank transfer?", "transfer"),
    ("Why is my balance not updated after the deposit?", "account"),
    ("Can I get a virtual card for online shopping?", "card"),
    ("My contactless payment is not working", "card"),
    ("What are the fees for international transfers?", "fees"),
    ("I need to change the phone number on my account", "account"),
    ("How do I activate my new card?", "card"),
    ("The cash machine gave me the wrong amount of money", "fees"),
    ("Why did my direct debit bounce?", "transfer"),
    ("Can I cancel a transfer I made by mistake?", "transfer"),
    ("My salary has not arrived in my account", "transfer"),
    ("How do I order a replacement card?", "card"),
    ("I think someone has used my card without my permission", "card"),
    ("Where can I see my card's expiry date?", "card"),
    ("Can I have more than one currency in my account?", "account"),
    ("What happens if my card expires while I am travelling?", "card"),
    ("The exchange rate on my payment was wrong", "fees"),
    ("How do I freeze my card in the app?", "card"),
    ("I received money from someone but it is still pending", "transfer"),
    ("Can I pay with Apple Pay or Google Pay?", "card"),
    ("Why is there a hold on my account funds?", "account"),
    ("How do I dispute a card transaction?", "card"),
    ("My account has been frozen, what should I do?", "account"),
    ("How long does a bank transfer take to arrive?", "transfer"),
    ("I entered the wrong account number for a transfer", "transfer"),
    ("Do you charge for currency exchange at weekends?", "fees"),
    ("I need a statement for my mortgage application", "account"),
    ("The PIN I received does not work at the ATM", "card"),
    ("How do I link my card to a subscription service?", "card"),
    ("Why was my cash withdrawal declined abroad?", "fees"),
    ("Can I get my card delivered faster?", "card"),
    ("My card is damaged and the chip does not work", "card"),
    ("How can I increase my daily spending limit?", "fees"),
    ("A merchant charged me the wrong amount", "fees"),
    ("I want to report a suspicious text message about my account", "account"),
    ("How do I get interest on my savings?", "account"),
    ("The app crashes when I try to make a payment", "account"),
    ("What documents do I need to prove my address?", "account"),
]
SHIFTED = [
    "The home team scored twice in the final ten minutes to win the derby",
    "Heavy rain and strong winds are expected across the north tonight",
    "The striker signed a three year contract with the league champions",
    "Temperatures will climb above thirty degrees by the weekend",
    "The tennis final went to five sets under the floodlights",
    "Snow is forecast on high ground with icy roads in the morning",
    "The coach was sent off after arguing with the referee",
    "A heatwave warning has been issued for the southern coast",
    "The marathon record was broken by nearly a minute",
    "Thunderstorms could bring flash flooding to low lying areas",
    "The cricket match was abandoned because of bad light",
    "Fog will clear by midday leaving a sunny afternoon",
    "The goalkeeper saved a penalty in the shootout",
    "Gusts of up to eighty miles an hour are likely near the coast",
    "The cyclist won the mountain stage and took the yellow jersey",
    "A cold front will bring a sharp drop in temperatures",
    "The basketball team extended its winning streak to twelve games",
    "Hail showers are possible this afternoon in the east",
    "The rugby side lost its captain to a knee injury",
    "Clear skies tonight mean a touch of frost in rural spots",
]
TOPICS = ["card delivery", "lost or stolen card", "money transfer", "exchange rate and fees", "account access"]


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder, pg_url: str) -> Iterator[Runtime]:
    with open_runtime(
        settings_for(
            data_dir,
            database_url=pg_url,
            model_reload_s=0.01,
            drift_window=20,
            drift_reference_events=20,
            drift_min_events=10,
            drift_threshold=THRESHOLD,
            alert_cooldown_s=0,
        ),
        encoder,
    ) as rt:
        yield rt


def process(rt: Runtime, texts: list[str], prefix: str) -> None:
    """Tickets through the real pipeline, as one batch (one processed_at)."""
    events = [ingest.EventIn(id=f"{prefix}-{i}", kind="ticket", text=text) for i, text in enumerate(texts)]
    with rt.db.session_scope() as s:
        ingest.accept(s, events=events, limits=ingest.Limits(max_events=100, max_text_chars=1000))
    assert run_batch([e.id for e in events if e.id])["done"] == len(events)


def measure(rt: Runtime) -> dict[str, drift.TaskDrift]:
    with rt.db.session_scope() as s:
        return {r.task: r for r in drift.measure(s, store=rt.store, settings=rt.settings)}


def open_drift_alerts(rt: Runtime) -> list[Alert]:
    with rt.db.session_scope() as s:
        return list(s.scalars(select(Alert).where(Alert.rule == drift.RULE, Alert.state == "open")))


def test_drift_against_the_first_events_rises_on_a_shifted_stream_only(runtime: Runtime) -> None:
    with runtime.db.session_scope() as s:  # a zero-shot task: predicted labels from the start
        add_task(s, name="topic", kind="ticket", labels=[LabelDef(t, t) for t in TOPICS], open_labels=False)
    banking = [text for text, _ in BANKING]
    process(runtime, banking[:20], "ref")
    assert measure(runtime)["topic"].score is None  # nothing recent beyond the reference yet
    process(runtime, banking[20:40], "same")
    calm = measure(runtime)
    process(runtime, SHIFTED, "shift")
    shifted = measure(runtime)

    for task in ("topic", "intent"):  # intent has no labels yet: only the embedding component
        assert shifted[task].reference == "first events" and calm[task].reference_events == 20
        high, low = shifted[task].score, calm[task].score
        assert high is not None and low is not None and high > THRESHOLD > low, (task, shifted[task], calm[task])
        assert shifted[task].embedding_distance > calm[task].embedding_distance  # type: ignore[operator]
    assert calm["intent"].label_divergence is None
    assert shifted["topic"].label_divergence > calm["topic"].label_divergence  # type: ignore[operator]
    assert "product" not in {r.kind for r in shifted.values() if r.score is not None}  # no products: no score


def test_drift_against_a_trained_models_snapshot(runtime: Runtime) -> None:
    labeled = BANKING[:30]
    with runtime.db.session_scope() as s:
        recorded = labels.record(
            s,
            labels=[labels.LabelIn(text=text, task="intent", label=label) for text, label in labeled],
            max_labels=100,
            max_text_chars=1000,
        )
    assert run_batch(recorded.new_event_ids)["done"] == len(labeled)  # the labeled texts have vectors
    with runtime.db.session_scope() as s:
        run_id = registry.new_run(s, task="intent").id
    outcome = runtime.trainer.execute(run_id)
    if not outcome.promoted:  # a tiny holdout may not beat zero-shot: serve it anyway
        with runtime.db.session_scope() as s:
            runs.activate(s, version=outcome.version, settings=runtime.settings)
    process(runtime, [text for text, _ in BANKING[30:50]], "same")
    calm = measure(runtime)["intent"]
    process(runtime, SHIFTED, "shift")
    shifted = measure(runtime)["intent"]

    assert calm.reference == f"model {outcome.version}" and calm.reference_events == len(labeled)
    assert set(calm.reference_labels) == {"card", "fees", "transfer", "account"}
    assert calm.label_divergence is not None and calm.embedding_distance is not None
    assert shifted.score > THRESHOLD > calm.score, (shifted, calm)  # type: ignore[operator]


def test_the_beat_check_opens_and_clears_a_model_drift_alert_and_exports_gauges(runtime: Runtime) -> None:
    banking = [text for text, _ in BANKING]
    process(runtime, banking[:20], "ref")
    process(runtime, banking[20:40], "same")
    raised = REGISTRY.get_sample_value("sift_alerts_raised_total", {"rule": "model_drift"}) or 0.0
    assert tasks.drift_check()["default"]["intent"] < THRESHOLD
    assert open_drift_alerts(runtime) == []

    process(runtime, SHIFTED, "shift")
    scores = tasks.drift_check()["default"]  # the task body, as a worker runs it (per tenant)
    assert scores["intent"] > THRESHOLD
    [alert] = open_drift_alerts(runtime)
    assert alert.entity == "intent" and alert.figures["score"] == pytest.approx(scores["intent"], abs=1e-4)
    assert set(alert.event_ids) <= {f"shift-{i}" for i in range(len(SHIFTED))} and alert.event_ids
    assert REGISTRY.get_sample_value("sift_alerts_raised_total", {"rule": "model_drift"}) == raised + 1
    exported = REGISTRY.get_sample_value("sift_drift_score", {"tenant": "default", "task": "intent"})
    assert exported == pytest.approx(scores["intent"])
    tasks.drift_check()  # still drifting: the same alert is refreshed, not repeated
    assert len(open_drift_alerts(runtime)) == 1

    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        body = client.get("/v1/drift").json()
        listed = client.get("/v1/alerts", params={"state": "open"}).json()["alerts"]
    by_task = {t["task"]: t for t in body["tasks"]}
    assert by_task["intent"]["drifting"] and by_task["intent"]["reference"] == "first events"
    assert by_task["category"]["score"] is None and by_task["category"]["recent_events"] == 0
    assert [(a["entity"], a["rule"]) for a in listed] == [("intent", "model_drift")]

    process(runtime, banking[40:60], "back")  # the stream is back to normal: the alert clears
    assert tasks.drift_check()["default"]["intent"] < THRESHOLD
    assert open_drift_alerts(runtime) == []
