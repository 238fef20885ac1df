"""A training run trains in one process at a time: a re-delivered or duplicate message for a run
under a live lease exits without training; a run whose trainer died (lease expired) is taken over;
a run whose training raises ends failed with its error. And the time budget, the task limit and
the broker's visibility timeout are checked against each other."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.classify import tasks
from services.db.models import ModelVersion, TrainingRun
from services.embedding.encoder import Encoder
from services.recommend.learned import TASK
from services.runtime import Runtime
from services.training import lease, registry
from tests.conftest import open_runtime, settings_for
from tests.recording import RecordingSender

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir), encoder) as rt:
        with rt.db.session_scope() as s:
            tasks.add_task(s, name="support", kind="ticket", labels=[], open_labels=True)
        yield rt


def new_run(rt: Runtime) -> str:
    with rt.db.session_scope() as s:
        return registry.new_run(s, task="support", now=NOW).id


def test_one_lease_at_a_time_and_an_expired_one_is_taken_over(runtime: Runtime) -> None:
    run_id = new_run(runtime)
    with runtime.db.session_scope() as s:
        assert lease.take(s, run_id=run_id, now=NOW)
    with runtime.db.session_scope() as s:
        assert not lease.take(s, run_id=run_id, now=NOW + timedelta(seconds=lease.LEASE_S - 1))  # live
    with runtime.db.session_scope() as s:
        assert lease.take(s, run_id=run_id, now=NOW + timedelta(seconds=lease.LEASE_S + 1))  # its trainer died


def new_run_of(rt: Runtime, *, recommend: bool) -> str:
    if not recommend:
        return new_run(rt)
    with rt.db.session_scope() as s:
        return registry.new_run(s, task=TASK, now=NOW, others=[TASK]).id


@pytest.mark.parametrize("recommend", [False, True], ids=["classifier", "recommend"])
def test_a_message_for_a_run_under_a_live_lease_trains_nothing(runtime: Runtime, recommend: bool) -> None:
    run_id = new_run_of(runtime, recommend=recommend)
    with runtime.db.session_scope() as s:
        assert lease.take(s, run_id=run_id, now=datetime.now(UTC))
    sender = RecordingSender()
    outcome = runtime.trainer.run(run_id, send=sender)
    assert outcome.version == "" and outcome.notes == ["running elsewhere"] and sender.sent == []
    with runtime.db.session_scope() as s:
        run = s.get(TrainingRun, run_id)
        assert run is not None and run.status == "running" and run.model_version is None
        assert s.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.task == run.task)) == 0


@pytest.mark.parametrize("recommend", [False, True], ids=["classifier", "recommend"])
def test_a_run_whose_training_raises_ends_failed_with_its_error_and_its_heartbeat_stops(
    runtime: Runtime, recommend: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = new_run_of(runtime, recommend=recommend)
    trainer = runtime.trainer.others[TASK] if recommend else runtime.trainer

    def out_of_memory(*args: object) -> None:
        raise MemoryError("the head did not fit")

    monkeypatch.setattr(trainer, "_train", out_of_memory)
    with pytest.raises(MemoryError, match="did not fit"):
        runtime.trainer.run(run_id, send=RecordingSender())
    with runtime.db.session_scope() as s:
        run = s.get(TrainingRun, run_id)
        assert run is not None and run.status == "failed" and run.finished_at is not None
        assert run.error == "MemoryError: the head did not fit" and run.model_version is None
    assert not [t for t in threading.enumerate() if t.name.startswith("sift-lease")]


def test_the_heartbeat_extends_the_lease_while_the_run_trains(runtime: Runtime) -> None:
    run_id = new_run(runtime)
    with runtime.db.session_scope() as s:
        assert lease.take(s, run_id=run_id, now=datetime.now(UTC), lease_s=0.4)
    with lease.Heartbeat(runtime.db.session_scope, run_id, lease_s=0.4):
        time.sleep(1.0)
        with runtime.db.session_scope() as s:
            assert not lease.take(s, run_id=run_id, now=datetime.now(UTC))


def test_budget_task_limit_and_visibility_timeout_are_checked_against_each_other() -> None:
    assert lease.time_limit_problems(budget_s=840, task_limit_s=1740, visibility_timeout_s=3600) == []
    assert lease.time_limit_problems(budget_s=840, task_limit_s=1740, visibility_timeout_s=None) == []
    [short] = lease.time_limit_problems(budget_s=3000, task_limit_s=3900, visibility_timeout_s=3600)
    assert "raise SIFT_VISIBILITY_TIMEOUT_S above 3960" in short and "lower SIFT_TRAIN_BUDGET_S" in short
    [limit] = lease.time_limit_problems(budget_s=900, task_limit_s=600, visibility_timeout_s=None)
    assert "SIFT_TRAIN_BUDGET_S" in limit
