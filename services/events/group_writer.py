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

from services.db import events as repo
from services.db.session import Database
from services.errors import DomainError, Transient
from services.events import accept as ingest

log = logging.getLogger(__name__)

Request = tuple[Database, Sequence[repo.NewEvent], "Future[ingest.Accepted]"]


class GroupWriter:
    """A writer thread that commits requests in groups of up to max_events events: one transaction
    per tenant in the group, each in the tenant's own database; on_queued(tenant, ids) follows."""

    def __init__(self, *, on_queued: Callable[[str, list[str]], None], max_events: int = 2000) -> None:
        self._on_queued = on_queued
        self._max_events = max_events
        self._requests: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sift-writer", daemon=True)
        self._thread.start()

    def submit(self, db: Database, events: Sequence[repo.NewEvent]) -> Future[ingest.Accepted]:
        """Queue a prepared request for a tenant's database; the future resolves once it is
        committed and enqueued."""
        future: Future[ingest.Accepted] = Future()
        self._requests.put((db, events, future))
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
            group, size, stop = [first], len(first[1]), False
            while size < self._max_events:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                size += len(more[1])
            by_tenant: dict[str, list[Request]] = {}
            for request in group:
                by_tenant.setdefault(request[0].tenant, []).append(request)
            for requests in by_tenant.values():
                self._write(requests)
            if stop:
                return

    def _write(self, group: list[Request]) -> None:
        db = group[0][0]
        try:
            with db.session_scope() as session:
                results = ingest.write_requests(session, requests=[events for _, events, _ in group])
        except Transient as exc:  # the database is down: every request in the group gets a 503
            for _, _, future in group:
                future.set_exception(exc)
            return
        except Exception as exc:
            if len(group) == 1:
                group[0][2].set_exception(exc)
                return
            log.warning("a group of %d requests failed (%s); writing them one by one", len(group), exc)
            for request in group:
                self._write([request])
            return
        self._on_queued(db.tenant, [i for r in results if isinstance(r, ingest.Accepted) for i in r.queued])
        for (_, _, future), result in zip(group, results, strict=True):
            if isinstance(result, DomainError):
                future.set_exception(result)
            else:
                future.set_result(result)
