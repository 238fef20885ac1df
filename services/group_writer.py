"""Group commit for the API: the events of many concurrent requests are written by one thread
in one transaction (one SELECT, one upsert, one commit), then their ids are handed to the
enqueuer, and only then does each request get its answer. A stream of single-event requests
thus costs one transaction per group instead of one per request."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from services import ingest
from services.db import events as repo
from services.db.session import Database
from services.errors import DomainError, Transient

log = logging.getLogger(__name__)

Request = tuple[Sequence[repo.NewEvent], "Future[ingest.Accepted]"]


class GroupWriter:
    """A writer thread that commits requests in groups of up to max_events events."""

    def __init__(self, db: Database, *, on_queued: Callable[[list[str]], None], max_events: int = 2000) -> None:
        self._db = db
        self._on_queued = on_queued
        self._max_events = max_events
        self._requests: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sift-writer", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[repo.NewEvent]) -> Future[ingest.Accepted]:
        """Queue a prepared request; the future resolves once it is committed and enqueued."""
        future: Future[ingest.Accepted] = Future()
        self._requests.put((events, future))
        return future

    def close(self) -> None:
        """Write what is pending, then stop."""
        self._requests.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            group, size, stop = [first], len(first[0]), False
            while size < self._max_events:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                size += len(more[0])
            self._write(group)
            if stop:
                return

    def _write(self, group: list[Request]) -> None:
        try:
            with self._db.session_scope() as session:
                results = ingest.write_requests(session, requests=[events for events, _ in group])
        except Transient as exc:  # the database is down: every request in the group gets a 503
            for _, future in group:
                future.set_exception(exc)
            return
        except Exception as exc:
            if len(group) == 1:
                group[0][1].set_exception(exc)
                return
            log.warning("a group of %d requests failed (%s); writing them one by one", len(group), exc)
            for request in group:
                self._write([request])
            return
        self._on_queued([i for r in results if isinstance(r, ingest.Accepted) for i in r.queued])
        for (_, future), result in zip(group, results, strict=True):
            if isinstance(result, DomainError):
                future.set_exception(result)
            else:
                future.set_result(result)
