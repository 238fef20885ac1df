"""`sift reprocess`: run processing again for chosen events, then follow them with a live bar
(done / total, elapsed, ETA) until the worker has processed them all."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy import func, select

from services.cli.output import console, exit_codes, fail, print_summary
from services.errors import BrokerUnavailable


def reprocess(
    ids: Annotated[list[str] | None, typer.Argument(help="event ids (none: every event the options select)")] = None,
    kind: Annotated[str | None, typer.Option(help="ticket, news or product")] = None,
    since: Annotated[datetime | None, typer.Option(help="received at or after (UTC unless a zone is given)")] = None,
    until: Annotated[datetime | None, typer.Option(help="received before (UTC unless a zone is given)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most events to re-queue, oldest first")] = 10_000,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow them until processed")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run processing again for chosen events (ids, --kind, --since/--until); idempotent."""
    from services.events.reprocess import Selection

    try:
        selection = Selection(ids=ids or [], kind=kind, since=since, until=until, limit=limit)
    except ValidationError as exc:
        raise fail(exc.errors()[0]["msg"].removeprefix("Value error, ")) from exc
    print_summary(lambda: _run(selection, wait=wait), as_json=as_json)


def _run(selection: Any, *, wait: bool) -> dict[str, Any]:
    from services.enqueue import Enqueuer, make_celery
    from services.events.reprocess import requeue
    from services.runtime import get_runtime

    runtime = get_runtime()
    with runtime.db.session_scope() as session:
        done = requeue(session, selection=selection, now=datetime.now(UTC))
    summary: dict[str, Any] = {"matched": done.matched, "queued": len(done.queued), "in_flight": done.in_flight}
    try:
        Enqueuer(make_celery(runtime.settings, name="sift-cli"), batch_size=runtime.settings.batch_size).send(
            done.queued, tenant=runtime.tenant
        )
    except BrokerUnavailable:
        summary["not_enqueued"] = len(done.queued)
        return summary
    if wait and done.queued:
        summary.update(exit_codes(lambda: follow(runtime, done.queued)))
    return summary


def follow(runtime: Any, ids: list[str], *, label: str = "reprocess", timeout_s: float = 3600) -> dict[str, int]:
    """Poll the events' statuses with a bar until none is queued or processing (a worker must run:
    `sift up`); the counts of done and failed."""
    from services.db.models import Event

    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    deadline = time.monotonic() + timeout_s
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(label, total=len(ids))
        while True:
            counts: dict[str, int] = {}
            with runtime.db.session_scope() as session:
                for start in range(0, len(ids), 1000):
                    chunk = ids[start : start + 1000]
                    query = select(Event.status, func.count()).where(Event.id.in_(chunk)).group_by(Event.status)
                    for status, n in session.execute(query).all():
                        counts[status] = counts.get(status, 0) + int(n)
            finished = counts.get("done", 0) + counts.get("failed", 0)
            progress.update(bar, completed=finished)
            if finished >= len(ids) or time.monotonic() > deadline:
                return {"done": counts.get("done", 0), "failed": counts.get("failed", 0)}
            time.sleep(0.5)
