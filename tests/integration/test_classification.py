"""Classification end to end on SQLite and embedded Qdrant with the real model: zero-shot before
labels, labels (versioned, validated), training runs that promote or do not, rollback, hot reload
in a running worker, and a re-index that is interrupted, resumed, and keeps searches answering."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.classify import tasks
from services.classify.head import Head
from services.config import Settings
from services.db.models import Event, KindEncoder, Label, ModelVersion, ReindexJob
from services.embedding.encoder import Encoder
from services.errors import InvalidInput
from services.events import accept as ingest
from services.matching import faq
from services.runtime import Runtime
from services.training import dataset, labels, registry, runs, tuning
from services.training.reindex import Reindexer
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import run_batch

LIMITS = ingest.Limits(max_events=1000, max_text_chars=10_000)

# A small task with two clear labels: enough for a head to learn, quick to train.
CARD = [f"my card {w} has not arrived yet" for w in ("visa", "debit", "new", "credit", "metal", "spare")] + [
    f"the {w} card I ordered is still not here" for w in ("visa", "debit", "new", "credit", "metal", "spare")
]
REFUND = [f"I want a refund for the {w} I returned" for w in ("shoes", "phone", "ticket", "order", "book", "lamp")] + [
    f"please give me my money back for the {w}" for w in ("shoes", "phone", "ticket", "order", "book", "lamp")
]


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    settings = (
        settings_for(  # with a holdout (train_kfold_below 0): tests/integration/test_training_estimate.py has k-fold
            data_dir,
            model_reload_s=0.2,
            train_fine_tune_min_labels=10_000,
            train_holdout=0.25,
            reindex_page=4,
            train_kfold_below=0,
        )
    )
    with open_runtime(settings, encoder) as rt:
        yield rt


def accept(rt: Runtime, items: list[tuple[str, str]]) -> list[str]:
    events = [ingest.EventIn(id=f"{k}-{n}", kind=k, text=t) for n, (k, t) in enumerate(items)]  # type: ignore[arg-type]
    with rt.db.session_scope() as s:
        return ingest.accept(s, events=events, limits=LIMITS).ids


def event(rt: Runtime, event_id: str) -> Event:
    with rt.db.session_scope() as s:
        row = s.get(Event, event_id)
        assert row is not None
        return row


def add_support_task(rt: Runtime) -> None:
    with rt.db.session_scope() as s:
        tasks.add_task(s, name="support", kind="ticket", labels=[], open_labels=True)
        labels.record(
            s,
            labels=[labels.LabelIn(text=t, task="support", label="card_arrival") for t in CARD]
            + [labels.LabelIn(text=t, task="support", label="refund") for t in REFUND],
            max_labels=1000,
            max_text_chars=1000,
        )


def train(rt: Runtime, task: str) -> runs.Outcome:
    with rt.db.session_scope() as s:
        run_id = registry.new_run(s, task=task).id
    return rt.trainer.execute(run_id)


def test_news_is_classified_zero_shot_before_any_label(runtime: Runtime) -> None:
    accept(runtime, [("news", "Profit fell sharply and the company cut 2,000 jobs after a loss")])
    assert run_batch(["news-0"])["done"] == 1
    prediction = event(runtime, "news-0").predictions["sentiment"]
    assert prediction["zero_shot"] is True and prediction["model_version"].startswith("zero-shot@")
    assert set(prediction["probs"]) == {"negative", "neutral", "positive"}
    assert abs(sum(prediction["probs"].values()) - 1) < 1e-3
    assert prediction["label"] == "negative"
    payload = runtime.store.retrieve("sift_news", [ingest.point_id_for("news-0", tenant=runtime.tenant)])[0].payload
    assert payload["predictions"]["sentiment"] == prediction


def test_labels_are_versioned_and_a_repeat_writes_nothing(runtime: Runtime) -> None:
    accept(runtime, [("news", "Sales rose 20% in the quarter")])
    with runtime.db.session_scope() as s:
        first = labels.record(
            s,
            labels=[labels.LabelIn(event_id="news-0", task="sentiment", label="neutral")],
            max_labels=10,
            max_text_chars=100,
        )
        again = labels.record(
            s,
            labels=[labels.LabelIn(event_id="news-0", task="sentiment", label="neutral")],
            max_labels=10,
            max_text_chars=100,
        )
        fixed = labels.record(
            s,
            labels=[labels.LabelIn(event_id="news-0", task="sentiment", label="positive")],
            max_labels=10,
            max_text_chars=100,
        )
    assert (first.written, again.written, again.unchanged, fixed.written) == (1, 0, 1, 1)
    with runtime.db.session_scope() as s:
        rows = labels.history(s, event_id="news-0", task="sentiment")
        assert [(r.label, r.superseded_by) for r in rows] == [("neutral", rows[1].id), ("positive", None)]
        assert [r.label for r in labels.current(s, task="sentiment")] == ["positive"]


def test_bad_labels_write_nothing_and_say_which(runtime: Runtime) -> None:
    accept(runtime, [("news", "Sales rose"), ("ticket", "where is my card")])
    bad = [
        labels.LabelIn(event_id="news-0", task="sentiment", label="positive"),  # fine, but the batch fails
        labels.LabelIn(event_id="nope", task="sentiment", label="positive"),
        labels.LabelIn(text="hello", task="no_such_task", label="x"),
        labels.LabelIn(event_id="news-0", task="sentiment", label="great"),  # not a sentiment label
        labels.LabelIn(event_id="ticket-1", task="sentiment", label="positive"),  # a ticket is not news
    ]
    with pytest.raises(InvalidInput) as caught, runtime.db.session_scope() as s:
        labels.record(s, labels=bad, max_labels=10, max_text_chars=100)
    problems = {(p["index"], p["field"]) for p in caught.value.details}
    assert problems == {(1, "event_id"), (2, "task"), (3, "label"), (4, "event_id")}
    with runtime.db.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Label)) == 0


def test_the_labels_api_makes_events_for_texts_and_refuses_bad_input(runtime: Runtime) -> None:
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        ok = client.post(
            "/v1/labels", json={"labels": [{"text": "I lost my card", "task": "intent", "label": "lost_card"}]}
        )
        assert ok.status_code == 201, ok.text
        new_id = ok.json()["new_event_ids"][0]
        assert client.get(f"/v1/events/{new_id}").json()["kind"] == "ticket"
        tasks = {t["name"]: t for t in client.get("/v1/tasks").json()["tasks"]}
        assert [x["name"] for x in tasks["intent"]["labels"]] == ["lost_card"]  # an open task learned it

        unknown = client.post("/v1/labels", json={"labels": [{"text": "x", "task": "nope", "label": "a"}]})
        assert unknown.status_code == 422 and "unknown task 'nope'" in unknown.json()["error"]["details"][0]["problem"]
        neither = client.post("/v1/labels", json={"labels": [{"task": "intent", "label": "a"}]})
        assert neither.status_code == 422 and "event_id" in neither.json()["error"]["message"]
        assert client.post("/v1/labels", json={"labels": []}).status_code == 422

        created = client.post(
            "/v1/tasks", json={"name": "urgency", "kind": "ticket", "labels": [{"name": "high"}, {"name": "low"}]}
        )
        assert created.status_code == 201 and created.json()["labels"][0]["description"] == "high"
        clash = client.post("/v1/tasks", json={"name": "urgency", "kind": "news", "labels": [{"name": "high"}]})
        assert clash.status_code == 409
        assert (
            client.post("/v1/tasks", json={"name": "Bad Name", "kind": "ticket", "open_labels": True}).status_code
            == 422
        )
        assert client.post("/v1/training/runs", json={"task": "nope"}).status_code == 404
        queued = client.post("/v1/training/runs", json={"task": "intent"})
        assert queued.status_code == 202
        run = client.get(f"/v1/training/runs/{queued.json()['run_id']}").json()
        assert (run["status"], run["task"], run["promoted"], run["model_version"]) == ("queued", "intent", False, None)
        assert client.post("/v1/training/runs", json={"task": "intent"}).status_code == 409  # one at a time
        assert client.get("/v1/models").json() == {"models": [], "reindex": []}
        assert client.post("/v1/models/nope/activate").status_code == 404
        assert client.get("/v1/training/runs/nope").status_code == 404


def test_a_run_promotes_a_better_head_and_a_running_worker_reloads_it(runtime: Runtime) -> None:
    add_support_task(runtime)
    accept(runtime, [("ticket", "my spare card never came")])
    run_batch(["ticket-0"])
    before = event(runtime, "ticket-0").predictions["support"]
    assert before["zero_shot"] is True  # labels exist but no version yet: zero-shot over the label names

    outcome = train(runtime, "support")
    assert outcome.promoted and outcome.metrics["accuracy"] >= outcome.metrics["baseline"]["accuracy"]
    assert outcome.metrics["holdout"] >= 2 and outcome.metrics["train"] + outcome.metrics["holdout"] == 24
    assert outcome.metrics["description_examples"] == 2  # 12 labels per class are few: each name is an example too
    with runtime.db.session_scope() as s:
        assert registry.get_version(s, version=outcome.version).status == "active"

    # The same worker process (its ActiveModels already loaded) serves the new head without a restart.
    accept(runtime, [("ticket", "my spare card never came"), ("ticket", "refund the lamp please")])
    runtime.models._checked = 0.0  # as if SIFT_MODEL_RELOAD_S had passed
    run_batch(["ticket-0", "ticket-1"])
    after = event(runtime, "ticket-1").predictions["support"]
    assert after["zero_shot"] is False and after["model_version"] == outcome.version
    assert after["label"] == "refund"


def test_a_run_that_is_not_better_is_not_promoted_and_rollback_works(runtime: Runtime) -> None:
    add_support_task(runtime)
    first = train(runtime, "support")
    second = train(runtime, "support")  # the same labels: the same accuracy, not better by the margin
    assert first.promoted and not second.promoted
    assert any("not promoted" in note for note in second.notes)
    with runtime.db.session_scope() as s:
        assert registry.get_version(s, version=second.version).status == "rejected"
        assert runs.activate(s, version=second.version, settings=runtime.settings) is None  # by hand
    with runtime.db.session_scope() as s:
        statuses = {v.version: v.status for v in registry.list_versions(s, task="support")}
    assert statuses == {first.version: "retired", second.version: "active"}
    with runtime.db.session_scope() as s:  # rollback
        runs.activate(s, version=first.version, settings=runtime.settings)
    with runtime.db.session_scope() as s:
        statuses = {v.version: v.status for v in registry.list_versions(s, task="support")}
    assert statuses == {first.version: "active", second.version: "retired"}


def test_the_beat_check_starts_a_run_only_with_enough_new_labels(runtime: Runtime) -> None:
    add_support_task(runtime)
    with runtime.db.session_scope() as s:
        assert registry.due_tasks(s, min_new_labels=25) == []
        assert registry.due_tasks(s, min_new_labels=24) == ["support"]
    train(runtime, "support")
    with runtime.db.session_scope() as s:
        assert registry.due_tasks(s, min_new_labels=1) == []


def test_a_reindex_is_interrupted_resumed_and_searches_answer_throughout(runtime: Runtime, encoder: Encoder) -> None:
    texts = [("ticket", f"ticket number {i} about my card") for i in range(10)]
    accept(runtime, texts)
    run_batch([f"ticket-{i}" for i in range(10)])
    add_support_task(runtime)
    outcome = train(runtime, "support")

    # A version that brings its own encoder (here: a saved copy of the base model under a new name).
    artifact = Path(runtime.settings.models_dir) / "support-tuned"
    shutil.copytree(outcome_path(runtime, outcome.version), artifact)
    encoder._model.save(str(artifact / "encoder"))
    with runtime.db.session_scope() as s:
        base = registry.get_version(s, version=outcome.version)
        s.add(
            ModelVersion(
                version="support-tuned",
                task="support",
                kind="ticket",
                status="candidate",
                encoder_version="support-tuned",
                artifact_path=str(artifact),
                labels=base.labels,
                snapshot=base.snapshot,
                metrics=base.metrics,
                created_at=base.created_at,
            )
        )
    with runtime.db.session_scope() as s:
        job_id = runs.activate(s, version="support-tuned", settings=runtime.settings)
    assert job_id is not None

    query = encoder.encode(["ticket number 3 about my card"])[0]

    def search() -> list[Any]:
        kind = runtime.models.for_kind("ticket")
        return runtime.store.search(kind.collection, query.tolist(), limit=3)

    assert search()[0].payload["event_id"] == "ticket-3"
    assert (
        Reindexer(
            settings=runtime.settings, sessions=runtime.db.session_scope, store=runtime.store, models=runtime.models
        ).step(job_id, pages=2)
        == "running"
    )
    with runtime.db.session_scope() as s:
        job = s.get(ReindexJob, job_id)
        assert job is not None and job.done == 8 and job.cursor
        assert s.get(KindEncoder, "ticket") is None  # not switched: readers still use the old collection
        assert registry.get_version(s, version="support-tuned").status == "reindexing"
    assert search()[0].payload["event_id"] == "ticket-3"

    # "Crash": a new reindexer (as in a restarted worker) resumes from the cursor.
    resumed = Reindexer(
        settings=runtime.settings, sessions=runtime.db.session_scope, store=runtime.store, models=runtime.models
    )
    assert resumed.step(job_id) == "switched"
    with runtime.db.session_scope() as s:
        job = s.get(ReindexJob, job_id)
        alias = s.get(KindEncoder, "ticket")
        assert job is not None and job.done == job.total == 10  # 8 before the crash, 2 after: not restarted
        assert alias is not None and alias.collection == job.collection != "sift_ticket"
        assert registry.get_version(s, version="support-tuned").status == "active"
    hits = search()
    assert runtime.models.for_kind("ticket").collection == alias.collection
    assert hits[0].payload["event_id"] == "ticket-3" and hits[0].payload["model_version"] == "support-tuned"
    assert runtime.store.count(alias.collection) == runtime.store.count("sift_ticket")

    # New events now go to the new collection, embedded by the new encoder.
    accept(runtime, [("ticket", "a brand new ticket")])
    run_batch(["ticket-0"])
    assert event(runtime, "ticket-0").model_version == "support-tuned"


def outcome_path(rt: Runtime, version: str) -> Path:
    with rt.db.session_scope() as s:
        return Path(registry.get_version(s, version=version).artifact_path)


def test_head_math() -> None:
    vectors = np.eye(3, dtype=np.float32)
    head = Head.zero_shot(["a", "b", "c"], vectors, temperature=0.05)
    assert head.predict(vectors) == ["a", "b", "c"]
    binary = Head.from_logistic(["x", "y"], np.array([[2.0, 0.0]]), np.array([0.0]))
    p = binary.probs(np.array([[1.0, 0.0]], dtype=np.float32))[0]
    assert abs(p[1] - 1 / (1 + np.exp(-2.0))) < 1e-6


def fine_tune_on_cpu(
    settings: Settings, labeled: list[dataset.Example], out_dir: Path, **options: Any
) -> tuple[dict[str, Any], Head]:
    return tuning.fine_tune(
        settings.model_path,
        labeled,
        out_dir=out_dir,
        settings=settings,
        device="cpu",
        progress=lambda *_: None,
        **options,
    )


def test_self_training_fine_tunes_on_repeated_labels_and_pseudo_labels(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, train_batch_size=8, train_min_examples_seen=60, train_pseudo_neighbours=0)
    pin = [f"how do I change the PIN of my {w} card" for w in ("visa", "debit", "new", "credit", "metal")] + [
        f"I forgot the PIN code for my {w} card" for w in ("visa", "debit", "new", "credit", "metal")
    ]
    groups = {"card_arrival": CARD[:10], "refund": REFUND[:10], "pin": pin}
    labeled = [dataset.Example(t, label) for label, texts in groups.items() for t in texts[:4]]
    unlabeled = [t for texts in groups.values() for t in texts[4:8]]
    report, classifier = fine_tune_on_cpu(settings, labeled, tmp_path / "run", unlabeled=unlabeled)
    # Each person's label counts SIFT_TRAIN_LABEL_REPEATS (3) times against a pseudo-label's once.
    assert (report["examples"], report["label_repeats"]) == (12, 3) and report["pseudo_labeled"] == 12
    assert report["trained_on"] == 3 * 12 + report["pseudo_labeled"]
    assert report["soup"] == 1  # self-training fine-tunes once, whatever SIFT_TRAIN_SOUP says
    tuned = tuning.load_tuned(tmp_path / "run", settings=settings, device="cpu", backend="torch")
    held_out = [t for texts in groups.values() for t in texts[8:10]]
    assert classifier.predict(tuned.encode(held_out)) == [label for label in groups for _ in range(2)]


def test_a_fine_tuning_short_of_time_trains_fewer_epochs_and_ends_by_its_deadline(tmp_path: Path) -> None:
    # 1,000 epochs of 24 examples wanted (about 3,000 steps: many minutes on a CPU), 25 s given.
    settings = settings_for(tmp_path, train_batch_size=8, train_min_examples_seen=24_000, train_max_epochs=1000)
    labeled = [dataset.Example(t, "card_arrival") for t in CARD[:12]] + [
        dataset.Example(t, "refund") for t in REFUND[:12]
    ]
    deadline = time.monotonic() + 25
    report, _ = fine_tune_on_cpu(settings, labeled, tmp_path / "run", deadline=deadline)
    assert report["epochs_wanted"] == 1000 and 0 < report["epochs"] < 1000 and report["step_s"] > 0
    assert report["soup"] == 1  # a second fine-tuning to average with does not fit
    assert time.monotonic() < deadline + 15  # saving the encoder comes after the last step


def test_a_run_with_enough_labels_fine_tunes_the_encoder_and_reindexes(runtime: Runtime) -> None:
    runtime.settings.train_fine_tune_min_labels = 10
    runtime.settings.train_batch_size = 8
    runtime.settings.train_pseudo_below = 0  # not "few labels": a share is kept out to choose the head's C
    accept(runtime, [("ticket", "my metal card is late")])
    run_batch(["ticket-0"])
    with runtime.db.session_scope() as s:
        labels.record(
            s,
            labels=[labels.LabelIn(text=t, task="intent", label="card_arrival") for t in CARD]
            + [labels.LabelIn(text=t, task="intent", label="refund") for t in REFUND],
            max_labels=1000,
            max_text_chars=1000,
        )
    write_faqs(runtime, ("card_arrival", "When will my card arrive?"))
    outcome = train(runtime, "intent")
    assert 0 < outcome.metrics["fine_tune"]["examples"] < outcome.metrics["train"] and outcome.promoted
    assert outcome.metrics["fine_tune"]["soup"] == runtime.settings.train_soup == 2  # two seeds, weights averaged
    assert outcome.reindex_job is not None
    write_faqs(runtime, ("refund", "How do I get my money back?"))  # during the re-index: old collection
    path = outcome_path(runtime, outcome.version)
    assert (path / "encoder" / "config_sentence_transformers.json").is_file() and (path / "head.npz").is_file()
    with runtime.db.session_scope() as s:
        assert registry.get_version(s, version=outcome.version).status == "reindexing"
    assert runtime.reindexer.step(outcome.reindex_job) == "switched"
    accept(runtime, [("ticket", "refund my lamp")])
    run_batch(["ticket-0"])
    stored = event(runtime, "ticket-0")
    assert stored.model_version == outcome.version
    assert stored.predictions["intent"]["model_version"] == outcome.version
    assert stored.predictions["intent"]["label"] == "refund"
    # The FAQ base moved with the encoder: matching reads the new collection's FAQ points, and
    # the intent head (trained on FAQ ids) is part of the score.
    model = runtime.models.for_kind("ticket")
    assert runtime.matcher.index().collection == faq.faq_collection(model.collection) != "sift_ticket__faq"
    assert runtime.store.count(runtime.matcher.index().collection) == 2
    result = runtime.matcher.match_texts(["refund my lamp"], top_k=2)[0]
    assert [a.faq_id for a in result.matches] == ["refund", "card_arrival"]
    assert stored.predictions["suggestions"][0]["faq_id"] == "refund"


def write_faqs(rt: Runtime, *entries: tuple[str, str]) -> None:
    index = rt.matcher.index()
    items = [faq.FaqIn(id=faq_id, question=question, answer="...") for faq_id, question in entries]
    with rt.db.session_scope() as s:
        faq.upsert(s, faqs=items, index=index, limits=faq.FaqLimits(10, 10, 1000))
