"""Answer matching end to end on SQLite and embedded Qdrant with the real model: the FAQ base
through the API (CRUD reflected in matching at once), filters, abstain and calibration,
suggestions stored with ticket events, the feedback loop, and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.models import Label
from services.embedding.encoder import Encoder
from services.events import accept as ingest
from services.matching import calibration as match_calibration
from services.runtime import Runtime
from services.training import dataset, labels
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import run_batch

FAQS: list[dict[str, Any]] = [
    {
        "id": "card_arrival",
        "question": "When will my card arrive?",
        "paraphrases": ["my new card has not come yet", "how long does card delivery take"],
        "answer": "Cards arrive within 5 working days.",
        "tags": ["cards"],
        "locale": "en",
    },
    {
        "id": "refund",
        "question": "How do I get a refund?",
        "paraphrases": ["I want my money back for a purchase", "refund for an item I returned"],
        "answer": "Refunds take 3 days after we receive the item.",
        "tags": ["payments"],
        "locale": "en",
    },
    {
        "id": "password_reset",
        "question": "How do I reset my password?",
        "paraphrases": ["I forgot my password", "cannot log in, need a new password"],
        "answer": "Use 'forgot password' on the login page.",
        "tags": ["account"],
        "locale": "en",
    },
    {
        "id": "karte_ankunft",
        "question": "Wann kommt meine Karte an?",
        "paraphrases": ["meine neue Karte ist noch nicht da"],
        "answer": "Karten kommen in 5 Werktagen an.",
        "tags": ["cards"],
        "locale": "de",
    },
]


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(
        settings_for(data_dir, model_reload_s=0.2, train_fine_tune_min_labels=10_000, train_holdout=0.5), encoder
    ) as rt:
        yield rt


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False)) as test_client:
        authorize(test_client, runtime)
        response = test_client.post("/v1/faqs:bulk", json={"faqs": FAQS})
        assert response.status_code == 200, response.text
        assert sorted(response.json()["created"]) == sorted(f["id"] for f in FAQS)
        yield test_client


def match(client: TestClient, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/match", json={"text": text, **extra})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def first(client: TestClient, text: str, **extra: Any) -> str:
    return str(match(client, text, **extra)["matches"][0]["faq_id"])


def test_faq_writes_and_deletes_are_reflected_in_matching_at_once(client: TestClient, runtime: Runtime) -> None:
    result = match(client, "my card still hasn't arrived", top_k=2)
    assert result["matches"][0]["faq_id"] == "card_arrival" and len(result["matches"]) == 2
    assert result["matches"][0]["answer"] == "Cards arrive within 5 working days." and not result["calibrated"]
    assert first(client, "give me my money back") == "refund"
    assert match(client, "I want my money back for a purchase")["matches"][0]["similarity"] > 0.99

    # An edit: the entry now answers about addresses; its old paraphrases are gone from the index.
    edited = {"question": "How do I change my home address?", "answer": "In settings.", "paraphrases": []}
    assert client.put("/v1/faqs/refund", json=edited).status_code == 200
    after = match(client, "I want my money back for a purchase", top_k=5)["matches"]
    assert all(m["similarity"] < 0.6 for m in after)
    assert first(client, "I moved to a new flat, where do I update where I live") == "refund"
    collection = runtime.matcher.index().collection
    assert runtime.store.count(collection, filters={"faq_id": "refund"}) == 1

    # A paraphrase points at its entry: a match scores an entry from all of them.
    got = client.get("/v1/faqs/card_arrival").json()
    assert got["paraphrases"] == FAQS[0]["paraphrases"] and got["tags"] == ["cards"]
    assert client.get("/v1/faqs", params={"tag": "cards"}).json()["total"] == 2

    assert client.delete("/v1/faqs/password_reset").status_code == 204
    assert "password_reset" not in [m["faq_id"] for m in match(client, "I forgot my password", top_k=5)["matches"]]
    assert runtime.store.count(collection, filters={"faq_id": "password_reset"}) == 0
    assert client.get("/v1/faqs/password_reset").status_code == 404
    assert client.delete("/v1/faqs/password_reset").status_code == 404

    # Re-sending the same base is safe: unchanged entries are not re-embedded.
    again = client.post("/v1/faqs:bulk", json={"faqs": FAQS[:1]}).json()
    assert again == {"created": [], "updated": [], "unchanged": ["card_arrival"]}


def test_filters_restrict_answers_to_tags_and_locale(client: TestClient) -> None:
    german = match(client, "my card has not arrived", filters={"locale": "de"}, top_k=5)
    assert [m["faq_id"] for m in german["matches"]] == ["karte_ankunft"]
    cards = match(client, "I forgot my password", filters={"tags": ["cards"]}, top_k=5)
    assert {m["faq_id"] for m in cards["matches"]} <= {"card_arrival", "karte_ankunft"}
    either = match(client, "I forgot my password", filters={"tags": ["cards", "account"]}, top_k=5)
    assert either["matches"][0]["faq_id"] == "password_reset"
    nothing = match(client, "I forgot my password", filters={"tags": ["no-such-tag"]})
    assert nothing == {"matches": [], "confidence": 0.0, "abstain": True, "calibrated": False}


def test_an_off_topic_ticket_abstains_and_a_close_one_does_not(client: TestClient, runtime: Runtime) -> None:
    assert match(client, "what will the weather be like on mars next tuesday")["abstain"] is True
    close = match(client, "I can't remember my password")
    assert close["abstain"] is False and not close["calibrated"]
    runtime.settings.match_abstain_below = 0.99  # a fixed threshold overrides
    assert match(client, "I can't remember my password")["abstain"] is True


def test_calibration_on_held_out_labels_is_stored_and_applied(client: TestClient, runtime: Runtime) -> None:
    runtime.settings.match_min_calibration_examples = 6
    tickets = {
        "card_arrival": ["where is my card", "card not delivered", "still waiting for the card", "card is late"],
        "refund": ["money back please", "refund my order", "return and refund", "I need a refund now"],
        "password_reset": ["password forgotten", "reset my login", "locked out of account", "new password please"],
    }
    items = [labels.LabelIn(text=t, task="intent", label=f) for f, texts in tickets.items() for t in texts]
    items.append(
        labels.LabelIn(text="is the bank open on sunday", task="intent", label="card_arrival", outcome="rejected")
    )
    with runtime.db.session_scope() as s:
        labels.record(s, labels=items, max_labels=100, max_text_chars=1000)
    assert match(client, "I forgot my password")["calibrated"] is False
    response = client.post("/v1/match:calibrate")
    assert response.status_code == 200, response.text
    calibration = response.json()
    assert calibration["metrics"]["n"] >= 6 and calibration["target"] == 0.95
    assert calibration["metrics"]["precision_answered"] >= 0.95 or calibration["threshold"] == 1.0
    result = match(client, "I forgot my password")
    assert result["calibrated"] is True
    assert result["abstain"] == (result["confidence"] < calibration["threshold"])


def test_a_change_made_elsewhere_is_served_within_the_check_and_one_made_here_at_once(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A match reads the calibration and the entries it found at most once per recent.CHECK_S; an
    FAQ write or a calibration through this process is served from the next match on."""
    from datetime import UTC, datetime

    from services.db.models import Faq, MatchCalibration
    from services.matching import matcher as matching
    from services.matching import recent

    def store(threshold: float) -> None:  # as another process would: straight into SQL
        model = runtime.matcher.models.for_kind("ticket")
        row = MatchCalibration(
            encoder_version=model.encoder.version,
            intent_version=matching.intent_version(model),
            coef=[0.0, 0.0, 0.0, 0.0],  # confidence 0.5 whatever the scores
            threshold=threshold,
            target=0.95,
            created_at=datetime.now(UTC),
        )
        with runtime.db.session_scope() as s:
            s.add(row)
            s.get(Faq, "password_reset").answer = f"answer {threshold}"  # type: ignore[union-attr]

    monkeypatch.setattr(recent, "CHECK_S", 3600.0)
    before = match(client, "I forgot my password")
    assert before["calibrated"] is False and before["matches"][0]["answer"].startswith("Use 'forgot password'")
    store(0.1)
    assert match(client, "I forgot my password") == before  # what it read before
    monkeypatch.setattr(recent, "CHECK_S", 0.0)
    answered = match(client, "I forgot my password")
    assert answered["calibrated"] is True and answered["confidence"] == 0.5 and answered["abstain"] is False
    assert answered["matches"][0]["answer"] == "answer 0.1"
    monkeypatch.setattr(recent, "CHECK_S", 3600.0)
    store(0.9)
    assert match(client, "I forgot my password") == answered
    extra = {"question": "Is the app free?", "answer": "Yes."}
    assert client.put("/v1/faqs/app_price", json=extra).status_code in (200, 201)
    changed = match(client, "I forgot my password")  # a change here: all read again at once
    assert changed["abstain"] is True and changed["matches"][0]["answer"] == "answer 0.9"


def test_threshold_is_the_lowest_that_reaches_the_target_precision() -> None:
    confidence = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    threshold, answered, precision = match_calibration.choose_threshold(confidence, correct, target=0.8, z=0)
    assert (threshold, answered) == (0.5, 6) and precision == pytest.approx(5 / 6)
    assert match_calibration.choose_threshold(confidence, correct, target=0.99, z=0)[:2] == (0.7, 4)
    assert match_calibration.choose_threshold(confidence, np.zeros(7), target=0.5) == (1.0, 0, 0.0)
    # With the Wilson bound, few examples are not enough evidence: 4 right out of 4 is not 0.85 yet.
    assert match_calibration.choose_threshold(confidence, correct, target=0.85)[0] == 1.0
    many = np.repeat(confidence, 100)
    assert match_calibration.choose_threshold(many, np.repeat(correct, 100), target=0.8)[:2] == (0.5, 600)
    fitted = match_calibration.fit(
        np.array([[0.9, 0.5, 0.8], [0.3, 0.0, 0.2]] * 50), np.array([1.0, 0.0] * 50), target=0.9
    )
    assert fitted.metrics["precision_answered"] == 1.0 and fitted.metrics["abstain_rate"] == 0.5


def test_ticket_events_get_suggestions_at_ingest(client: TestClient, runtime: Runtime) -> None:
    events = [
        ingest.EventIn(id="t-1", kind="ticket", text="my new card has still not come"),  # type: ignore[arg-type]
        ingest.EventIn(id="n-1", kind="news", text="Acme shares fall after a profit warning"),  # type: ignore[arg-type]
        ingest.EventIn(id="t-de", kind="ticket", text="my new card has still not come", metadata={"locale": "de"}),  # type: ignore[arg-type]
    ]
    with runtime.db.session_scope() as s:
        ingest.accept(s, events=events, limits=ingest.Limits(max_events=10, max_text_chars=1000))
    run_batch(["t-1", "n-1", "t-de"])
    ticket = client.get("/v1/events/t-1").json()
    assert ticket["status"] == "done" and ticket["abstain"] is False
    assert ticket["suggestions"][0]["faq_id"] == "card_arrival" and len(ticket["suggestions"]) == 3
    news = client.get("/v1/events/n-1").json()
    assert news["suggestions"] == [] and news["abstain"] is None
    german = client.get("/v1/events/t-de").json()  # the ticket's metadata locale filters its suggestions
    assert [x["faq_id"] for x in german["suggestions"]] == ["karte_ankunft"]


def test_feedback_becomes_an_intent_label_and_a_resolved_ticket_a_paraphrase(
    client: TestClient, runtime: Runtime
) -> None:
    with runtime.db.session_scope() as s:
        ingest.accept(
            s,
            events=[ingest.EventIn(id="t-9", kind="ticket", text="the plastic thing with my name on it is missing")],  # type: ignore[arg-type]
            limits=ingest.Limits(max_events=10, max_text_chars=1000),
        )
    run_batch(["t-9"])
    rejected = {"event_id": "t-9", "task": "intent", "label": "refund", "outcome": "rejected"}
    assert client.post("/v1/labels", json={"labels": [rejected]}).status_code == 201
    with runtime.db.session_scope() as s:
        assert [r.label for r in labels.current(s, task="intent")] == []  # a rejection is not trained on
        assert [r.outcome for r in labels.current(s, task="intent", with_rejected=True)] == ["rejected"]
    manual = {"event_id": "t-9", "task": "intent", "label": "card_arrival", "outcome": "manual"}
    assert client.post("/v1/labels", json={"labels": [manual]}).status_code == 201
    with runtime.db.session_scope() as s:
        snapshot = dataset.take_snapshot(s, task="intent")
        assert [(e.text, e.label) for e in snapshot.examples] == [
            ("the plastic thing with my name on it is missing", "card_arrival")
        ]
        assert len(labels.history(s, event_id="t-9", task="intent")) == 2

    added = client.post("/v1/faqs/card_arrival/paraphrases", json={"event_ids": ["t-9"]})
    assert added.status_code == 200 and added.json()["added"] == 1
    result = match(client, "the plastic thing with my name on it is missing")
    assert result["matches"][0]["faq_id"] == "card_arrival" and result["matches"][0]["similarity"] > 0.99
    assert client.post("/v1/faqs/card_arrival/paraphrases", json={"event_ids": ["t-9"]}).json()["added"] == 0


def test_bad_input_is_refused_and_writes_nothing(client: TestClient, runtime: Runtime) -> None:
    def refused(response: Any, status: int = 422) -> str:
        assert response.status_code == status, response.text
        return str(response.json()["error"]["message"]) + str(response.json()["error"].get("details"))

    assert "blank" in refused(client.put("/v1/faqs/x", json={"question": " ", "answer": "a"}))
    slash = [{"id": "a/b", "question": "q", "answer": "a"}]
    assert "'/'" in refused(client.post("/v1/faqs:bulk", json={"faqs": slash}))
    two = [{"id": "new", "question": "q", "answer": "a"}, {"id": "new", "question": "q2", "answer": "a"}]
    assert "twice" in refused(client.post("/v1/faqs:bulk", json={"faqs": two}))
    mixed = [{"id": "ok", "question": "q", "answer": "a"}, {"id": "bad", "question": "q", "answer": "a", "x": 1}]
    refused(client.post("/v1/faqs:bulk", json={"faqs": mixed}))
    assert "empty or blank" in refused(
        client.post("/v1/faqs:bulk", json={"faqs": [{"id": "p", "question": "q", "answer": "a", "paraphrases": [""]}]})
    )
    assert client.get("/v1/faqs/ok").status_code == 404 and client.get("/v1/faqs/new").status_code == 404
    assert "at least one" in refused(client.post("/v1/faqs:bulk", json={"faqs": []}))

    assert "blank" in refused(client.post("/v1/match", json={"text": "  "}))
    refused(client.post("/v1/match", json={"text": "card", "top_k": 0}))
    refused(client.post("/v1/match", json={"text": "card", "filters": {"colour": "red"}}))
    assert "no event" in refused(client.post("/v1/faqs/refund/paraphrases", json={"event_ids": ["nope"]}))
    refused(client.post("/v1/faqs/nope/paraphrases", json={"texts": ["x"]}), 404)

    unknown_faq = {"text": "where is my card", "task": "intent", "label": "no_such_faq", "outcome": "accepted"}
    assert "no FAQ" in refused(client.post("/v1/labels", json={"labels": [unknown_faq]}))
    wrong_task = {"text": "Acme profit", "task": "sentiment", "label": "positive", "outcome": "accepted"}
    assert "intent" in refused(client.post("/v1/labels", json={"labels": [wrong_task]}))
    with runtime.db.session_scope() as s:
        assert s.query(Label).count() == 0


def test_a_changed_base_is_matched_with_the_last_threshold_while_the_new_one_is_derived(
    client: TestClient, runtime: Runtime
) -> None:
    """Deriving the threshold encodes the base's texts (seconds for a large one): after a change
    the next match does not wait for it, and the threshold of the new base follows."""
    import threading
    import time

    match(client, "I forgot my password")
    first_key = (runtime.matcher._derived or ((), 0.0))[0]
    release = threading.Event()
    encode = runtime.matcher.models.for_kind("ticket").encoder.encode
    entered = threading.Event()

    def held_encode(texts: Any) -> Any:
        if threading.current_thread().name == "sift-match-threshold":
            entered.set()
            release.wait(10)  # the background derivation is held until the match below has answered
        return encode(texts)

    runtime.matcher.models.for_kind("ticket").encoder.encode = held_encode  # type: ignore[method-assign]
    try:
        extra = {
            "question": "I lost my card",
            "paraphrases": ["my card is gone"],
            "answer": "Freeze it.",
        }
        assert client.put("/v1/faqs/lost_card", json=extra).status_code in (200, 201)
        started = time.monotonic()
        assert match(client, "I can't remember my password")["matches"][0]["faq_id"] == "password_reset"
        assert time.monotonic() - started < 5 and entered.wait(5)  # answered while the derivation waits
        assert runtime.matcher._derived is not None and runtime.matcher._derived[0] == first_key
        release.set()
        deadline = time.monotonic() + 10
        while runtime.matcher._derived is not None and runtime.matcher._derived[0] == first_key:
            assert time.monotonic() < deadline, "the new base's threshold was never derived"
            time.sleep(0.05)
        assert runtime.matcher._derived[0] != first_key and 0.3 <= runtime.matcher._derived[1] <= 0.9
    finally:
        release.set()
        del runtime.matcher.models.for_kind("ticket").encoder.encode
