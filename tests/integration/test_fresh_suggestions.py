"""Nothing goes stale behind the user's back: tickets processed before their FAQ entries existed
get suggestions once the base changes, without being sent again; `POST /v1/events:reprocess`
re-runs processing idempotently; an unrelated text abstains on a fresh base before any calibration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.runtime import Runtime
from services.task_names import PROCESS_EVENTS, REFRESH_SUGGESTIONS
from tests.conftest import authorize, open_runtime, settings_for
from tests.integration.test_matching import FAQS
from tests.recording import run_batch
from worker import tasks

TICKETS = {
    "card_arrival": ["my card still has not arrived", "the card you sent me never came", "waiting for my new card"],
    "refund": ["I returned the shoes, where is my money", "please refund my order", "I want a refund"],
    "password_reset": ["I forgot my password again", "locked out, need to reset my password", "password reset"],
}


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir), encoder) as rt:
        yield rt


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as test_client:
        authorize(test_client, runtime)
        yield test_client


def sent(runtime: Runtime, name: str) -> list[Any]:
    """Tasks of this name waiting in the on-disk broker (the test runs them itself)."""
    folder = runtime.settings.broker_folder
    return [p for p in folder.rglob("*") if p.is_file() and name.encode() in p.read_bytes()] if folder.exists() else []


def ingest_tickets(runtime: Runtime) -> dict[str, str]:
    """Every ticket accepted and processed now (the base is empty); its id -> the right FAQ id."""
    expected = {f"{faq_id}-{i}": faq_id for faq_id, texts in TICKETS.items() for i in range(len(texts))}
    events = [
        ingest.EventIn(id=f"{faq_id}-{i}", kind="ticket", text=text)
        for faq_id, texts in TICKETS.items()
        for i, text in enumerate(texts)
    ]
    with runtime.db.session_scope() as session:
        accepted = ingest.accept(session, events=events, limits=ingest.Limits(100, 1000))
    assert run_batch(accepted.queued)["done"] == len(events)
    return expected


def test_tickets_sent_before_their_faq_entries_get_suggestions_when_the_base_changes(
    client: TestClient, runtime: Runtime
) -> None:
    expected = ingest_tickets(runtime)
    before = client.get("/v1/events/card_arrival-0").json()
    assert before["suggestions"] == [] and before["abstain"] is True

    assert client.post("/v1/faqs:bulk", json={"faqs": FAQS}).status_code == 200
    assert sent(runtime, REFRESH_SUGGESTIONS)  # the write asked for a refresh in the background
    assert tasks.refresh_ticket_suggestions.run() == {"tickets": len(expected), "changed": len(expected)}
    right = 0
    for event_id, faq_id in expected.items():
        event = client.get(f"/v1/events/{event_id}").json()
        matched = client.post("/v1/match", json={"text": event_text(event_id)}).json()
        assert [s["faq_id"] for s in event["suggestions"]] == [m["faq_id"] for m in matched["matches"]]
        assert event["abstain"] == matched["abstain"]
        right += event["suggestions"][0]["faq_id"] == faq_id
    assert right >= 0.8 * len(expected)
    assert tasks.refresh_ticket_suggestions.run()["changed"] == 0  # idempotent

    # A deleted entry leaves the stored suggestions too.
    assert client.delete("/v1/faqs/refund").status_code == 204
    tasks.refresh_ticket_suggestions.run()
    suggested = {s["faq_id"] for e in expected for s in client.get(f"/v1/events/{e}").json()["suggestions"]}
    assert "refund" not in suggested


def event_text(event_id: str) -> str:
    faq_id, _, i = event_id.rpartition("-")
    return TICKETS[faq_id][int(i)]


def test_reprocess_requeues_done_events_once(client: TestClient, runtime: Runtime) -> None:
    expected = ingest_tickets(runtime)
    ids = sorted(expected)[:4]
    first = client.post("/v1/events:reprocess", json={"ids": ids})
    assert first.status_code == 200, first.text
    assert first.json() == {"matched": 4, "queued": 4, "in_flight": 0, "not_enqueued": 0}
    assert {client.get(f"/v1/events/{i}").json()["status"] for i in ids} == {"queued"}
    again = client.post("/v1/events:reprocess", json={"ids": ids}).json()
    assert again == {"matched": 4, "queued": 0, "in_flight": 4, "not_enqueued": 0}  # nothing queued twice
    assert run_batch(ids)["done"] == 4
    by_kind = client.post("/v1/events:reprocess", json={"kind": "ticket", "since": "2000-01-01T00:00:00Z"}).json()
    assert by_kind["matched"] == len(expected) and by_kind["queued"] == len(expected)
    assert sent(runtime, PROCESS_EVENTS)
    refused = client.post("/v1/events:reprocess", json={})
    assert refused.status_code == 422 and "name the events" in refused.text
    assert client.post("/v1/events:reprocess", json={"kind": "tweet"}).status_code == 422


def test_an_unrelated_text_abstains_on_a_fresh_base_before_any_calibration(client: TestClient) -> None:
    assert client.post("/v1/faqs:bulk", json={"faqs": FAQS}).status_code == 200
    weather = client.post("/v1/match", json={"text": "what's the weather in Paris tomorrow"}).json()
    assert weather["abstain"] is True and weather["calibrated"] is False
    close = client.post("/v1/match", json={"text": "I can't remember my password"}).json()
    assert close["abstain"] is False and close["matches"][0]["faq_id"] == "password_reset"
    # A base without any card entry: a card question is not answered with an unrelated entry.
    for faq_id in ("card_arrival", "karte_ankunft"):
        assert client.delete(f"/v1/faqs/{faq_id}").status_code == 204
    card = client.post("/v1/match", json={"text": "my card has not arrived"}).json()
    assert card["abstain"] is True, card
