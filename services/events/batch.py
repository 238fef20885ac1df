"""The batch use case: claim a tenant's events (topping the batch up from its backlog), process
them, record the outcomes, then hand the done events of each kind to what follows them.

While a backlog lasts (up to SIFT_BATCH_DRAIN_S), one run goes on claiming batches from it, and
encodes each batch while the one before it is written in a second thread (its points upserted
and flushed, then its outcomes recorded), so the encoder does not wait for the writes. At most
one batch is written at a time, in claim order; an event is recorded done only after its point
is written, and the run returns (so the broker acks its message) only after every write.

What follows a kind is given by the caller (the runtime wires it): a write in the same commit that
records the events done (news: the entity links, so a lost message cannot lose links) and a task
sent afterwards through the caller's sender (news: the alerts evaluation). The events are done by
then, so a sender that finds the broker down only delays that task until the beat's sweep.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from services import metrics
from services.config import Settings
from services.db import events as repo
from services.db.models import Event, as_utc
from services.errors import BrokerUnavailable, Transient
from services.events.pipeline import Pipeline, Prepared
from services.memo import Listeners
from services.task_names import Sender

log = logging.getLogger(__name__)
# Told, in this process, of each kind's newly done events once their commit is in (weakly held: a
# listener goes with its owner). The recommender drops its cached trending and newest items, so a new
# item is in feeds at once instead of after SIFT_RECOMMEND_CACHE_S.
_done_listeners: Listeners[[str, list[str]]] = Listeners()


def on_done(listener: Callable[[str, list[str]], None]) -> None:
    """Call the bound method listener(kind, ids) after each batch's done events of a kind are recorded."""
    _done_listeners.add(listener)


def _tell_listeners(done_by_kind: dict[str, list[str]]) -> None:
    for kind, ids in done_by_kind.items():
        _done_listeners.tell(kind, ids)


@dataclass(frozen=True)
class Written:
    """What the write stage did with a batch: its done event ids by kind, and the counts."""

    done_by_kind: dict[str, list[str]]
    done: int
    failed: int


@dataclass(frozen=True)
class FollowUp:
    """What a kind's done events go through: `record` in the commit that marks them done, then the
    task `then` sent with (event ids, tenant)."""

    record: Callable[[Session, list[str], datetime], object]
    then: str


class BatchProcessor:
    """Runs batches of one tenant's events through the pipeline; every step is idempotent."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Callable[[], Any],
        pipeline: Pipeline,
        follow_ups: Mapping[str, FollowUp],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.pipeline = pipeline
        self.follow_ups = follow_ups

    def run(self, event_ids: list[str], *, send: Sender) -> dict[str, int]:
        """Claim, process and record a batch, then further batches from the backlog while it lasts;
        send what follows their done events. A Transient error (a dependency down) releases the
        batches not recorded and propagates, so the caller retries."""
        started = time.monotonic()
        batch = self._claim(event_ids)
        if not batch:
            log.info(
                "claimed none of %d events (done or taken meanwhile)", len(event_ids), extra={"event_ids": event_ids}
            )
            return {"done": 0, "failed": 0}
        totals = {"done": 0, "failed": 0}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-record") as writer:
            writing: Future[Written] | None = None
            try:
                while batch:
                    now, encoding = datetime.now(UTC), time.perf_counter()
                    prepared = self._prepare(batch, now=now)
                    encoded_s = time.perf_counter() - encoding
                    previous, writing = writing, None
                    try:
                        self._settle(previous, totals, send)
                    except BaseException:
                        self._release(prepared.ids)  # encoded, never written
                        raise
                    # the write's log lines carry this task's ids: contextvars do not cross threads by themselves
                    writing = writer.submit(contextvars.copy_context().run, self._write, prepared, now, encoded_s)
                    drained = time.monotonic() - started >= self.settings.batch_drain_s
                    batch = [] if drained else self._claim([], holding=prepared.ids)
            finally:  # whatever happened, the write in flight ends before the run does
                self._settle(writing, totals, send)
        return totals

    def _prepare(self, batch: list[Event], *, now: datetime) -> Prepared:
        """The encode stage; a Transient error releases the batch."""
        try:
            return self.pipeline.prepare(batch, now=now)
        except Transient:
            self._release([e.id for e in batch])
            raise

    def _claim(self, event_ids: list[str], *, holding: list[str] | None = None) -> list[Event]:
        """The events of event_ids that wait, topped up from the backlog to a batch; never the
        batch this task is still writing (holding), however old its claim."""
        s = self.settings
        with self.sessions() as session:
            batch = repo.claim(
                session,
                ids=event_ids,
                now=datetime.now(UTC),
                stale_after_s=s.sweep_after_s,
                limit=s.batch_size,
                max_attempts=s.max_attempts,
                holding=holding or (),
            )
        if batch:
            log.info("claimed %d events", len(batch), extra={"event_ids": [e.id for e in batch]})
        return batch

    def _write(self, prepared: Prepared, now: datetime, encoded_s: float) -> Written:
        """The write stage: upsert the batch's points, then record its outcomes (and its follow-up
        records) in one commit and tell the listeners. A Transient error releases the batch."""
        writing = time.perf_counter()
        try:
            outcomes = self.pipeline.write(prepared)
            done_by_kind = self._record(prepared.events, outcomes, now=now)
        except Transient:
            self._release(prepared.ids)
            raise
        _tell_listeners(done_by_kind)
        _log_recorded(outcomes, encoded_s, writing)
        done = sum(o.ok for o in outcomes)
        return Written(done_by_kind, done, len(outcomes) - done)

    def _settle(self, writing: Future[Written] | None, totals: dict[str, int], send: Sender) -> None:
        """Wait for the write in flight (re-raising its error), then send what follows its done events."""
        if writing is None:
            return
        written = writing.result()
        totals["done"] += written.done
        totals["failed"] += written.failed
        self._notify(written.done_by_kind, send)

    def _record(self, batch: list[Event], outcomes: list[repo.Outcome], *, now: datetime) -> dict[str, list[str]]:
        """Write the outcomes and the kinds' follow-up records in one commit; drop the points of
        events deleted meanwhile. Returns the done event ids by kind."""
        done_by_kind: dict[str, list[str]] = {}
        for event, outcome in zip(batch, outcomes, strict=True):
            if outcome.ok:
                done_by_kind.setdefault(event.kind, []).append(event.id)
        with self.sessions() as session:
            repo.record(session, outcomes=outcomes, now=now)
            gone = set(repo.missing(session, ids=[o.event_id for o in outcomes if o.ok]))
            for kind, ids in done_by_kind.items():
                if kind in self.follow_ups:
                    self.follow_ups[kind].record(session, ids, now)
        recorded = [(e.kind, o.ok, as_utc(e.received_at)) for e, o in zip(batch, outcomes, strict=True)]
        metrics.observe_outcomes(recorded, now=now)
        if gone:  # deleted meanwhile (DELETE /v1/items/{id}): the point just written must go too
            self.pipeline.drop_points([e for e in batch if e.id in gone])
        return done_by_kind

    def _notify(self, done_by_kind: dict[str, list[str]], send: Sender) -> None:
        for kind, ids in done_by_kind.items():
            follow_up = self.follow_ups.get(kind)
            if follow_up is None:
                continue
            try:
                send(follow_up.then, ids, self.settings.tenant)
            except BrokerUnavailable:  # the events are recorded done: the beat's sweep catches up
                log.warning("broker down: %s waits for the sweep", follow_up.then)

    def _release(self, ids: list[str]) -> None:
        # Best effort: if the database is down too, the events stay processing and the sweep re-sends them.
        try:
            with self.sessions() as session:
                repo.release(session, ids=ids)
        except Transient:
            log.warning("could not release %d events; the sweep will re-send them", len(ids))


def _log_recorded(outcomes: list[repo.Outcome], encoded_s: float, writing: float) -> None:
    failed = [o.event_id for o in outcomes if not o.ok]
    log.info(
        "recorded %d events, %d failed: encode %.0f ms, upsert+record %.0f ms",
        len(outcomes),
        len(failed),
        1000 * encoded_s,
        1000 * (time.perf_counter() - writing),
        extra={"event_ids": [o.event_id for o in outcomes if o.ok], "failed_ids": failed},
    )
