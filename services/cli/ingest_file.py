"""`sift ingest FILE`: JSONL or CSV events, validated in full before anything is written."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.enqueue import Enqueuer, make_celery
from services.errors import BrokerUnavailable, InvalidInput
from services.events import accept as ingest
from services.runtime import get_runtime

MAX_REPORTED = 20


def read_rows(
    path: Path, *, csv_row: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, raw dict) for each record of a .jsonl/.json-lines or .csv file; CSV rows
    go through csv_row (default: the events' form, extra columns as metadata)."""
    csv_row = csv_row or _csv_row
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, csv_row(row)
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, {"__error__": f"not valid JSON: {exc.msg}"}
                continue
            yield number, record if isinstance(record, dict) else {"__error__": "each line must be a JSON object"}


def csv_header(path: Path) -> list[str] | None:
    """The column names of a .csv file (None for JSONL)."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def require_columns(path: Path, needs: list[tuple[str, str]]) -> None:
    """InvalidInput, once, when a CSV header lacks a column: needs holds (column, how to fix it)."""
    header = csv_header(path)
    if header is None:
        return
    fixes: dict[str, list[str]] = {}  # each fix said once, with the columns it is about
    for column, fix in needs:
        if column not in header:
            fixes.setdefault(fix, []).append(f"`{column}`")
    if fixes:
        found = ", ".join(header) or "nothing"
        said = "; ".join(f"no {' or '.join(columns)} column: {fix}" for fix, columns in fixes.items())
        raise InvalidInput(f"{path} line 1 (the header: {found}): {said}; nothing was written")


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
    for key in ("metadata", "entities"):
        if isinstance(out.get(key), str):
            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError:
                out[key] = {"__error__": f"{key} is not valid JSON"}
    extra = {k: out.pop(k) for k in list(out) if k not in ingest.EventIn.model_fields}
    if extra:  # other CSV columns (e.g. Banking77's category) become metadata
        out.setdefault("metadata", {}).update(extra)
    return out


def _parse(number: int, raw: dict[str, Any], default_kind: str | None) -> tuple[ingest.EventIn | None, str | None]:
    if "__error__" in raw:
        return None, f"line {number}: {raw['__error__']}"
    if default_kind and "kind" not in raw:
        raw = {**raw, "kind": default_kind}
    try:
        return ingest.EventIn.model_validate(raw), None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "record"
        return None, f"line {number}: {field}: {first['msg']}"


def validate_file(path: Path, *, default_kind: str | None, max_text_chars: int) -> int:
    """Count the events in path; raise InvalidInput listing the bad lines (nothing is written)."""
    needs = [("text", "each row's text goes in a column named text")]
    if default_kind is None:
        needs.append(("kind", "pass --kind ticket, news or product (or add a kind column)"))
    require_columns(path, needs)
    problems: list[str] = []
    kindless: list[int] = []
    seen: dict[str, int] = {}
    count = 0
    limits = ingest.Limits(max_events=1, max_text_chars=max_text_chars)
    for number, raw in read_rows(path):
        event, problem = _parse(number, raw, default_kind)
        if event is not None:
            try:
                ingest.check_limits(events=[event], limits=limits)
            except InvalidInput as exc:
                problem = f"line {number}: {exc.details[0]['field']}: {exc.details[0]['problem']}"
        if event is not None and event.id is not None:
            if event.id in seen:
                problem = problem or f"line {number}: id {event.id!r} already on line {seen[event.id]}"
            seen[event.id] = number
        if problem and problem.endswith("kind: Field required"):
            kindless.append(number)  # reported once below, with the flag that fixes it
        elif problem:
            problems.append(problem)
        count += 1
    if kindless:
        shown_lines = ", ".join(map(str, kindless[:5])) + (" ..." if len(kindless) > 5 else "")
        problems.insert(
            0, f"{len(kindless)} record(s) have no kind (line {shown_lines}): pass --kind ticket, news or product"
        )
    if problems:
        shown = "\n".join(problems[:MAX_REPORTED])
        more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise InvalidInput(f"{len(problems)} bad record(s) in {path}; nothing was written:\n{shown}{more}")
    if count == 0:
        raise InvalidInput(f"{path} holds no events")
    return count


def ingest_file(
    path: Path, *, default_kind: str | None, chunk: int, console: Console, wait: bool = False
) -> dict[str, Any]:
    """Validate the whole file, then write and enqueue it chunk by chunk with a progress bar; with
    wait, follow the queued events with a second bar until the worker has processed them."""
    runtime = get_runtime()
    s = runtime.settings
    total = validate_file(path, default_kind=default_kind, max_text_chars=s.max_text_chars)
    enqueuer = Enqueuer(make_celery(s, name="sift-cli"), batch_size=s.batch_size)
    limits = ingest.Limits(max_events=chunk, max_text_chars=s.max_text_chars)
    summary: dict[str, Any] = {"file": str(path), "events": total, "queued": 0, "unchanged": 0, "not_enqueued": 0}
    queued: list[str] = []
    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("ingest", total=total)
        batch: list[ingest.EventIn] = []
        rows = (_parse(n, raw, default_kind)[0] for n, raw in read_rows(path))
        for event in rows:
            assert event is not None  # validated above
            batch.append(event)
            if len(batch) == chunk:
                queued += _write(batch, runtime, enqueuer, limits, summary)
                progress.advance(bar, len(batch))
                batch = []
        if batch:
            queued += _write(batch, runtime, enqueuer, limits, summary)
            progress.advance(bar, len(batch))
    if wait and queued and not summary["not_enqueued"]:
        from services.cli.reprocess import follow

        summary.update(follow(runtime, queued, label="process"))
    return summary


def _write(
    batch: list[ingest.EventIn], runtime: Any, enqueuer: Enqueuer, limits: ingest.Limits, summary: dict[str, Any]
) -> list[str]:
    with runtime.db.session_scope() as session:
        accepted = ingest.accept(session, events=batch, limits=limits, now=datetime.now(UTC))
    summary["queued"] += len(accepted.queued)
    summary["unchanged"] += len(accepted.ids) - len(accepted.queued)
    try:
        enqueuer.send(accepted.queued, tenant=runtime.tenant)
    except BrokerUnavailable:
        # Committed as queued: the beat sweep sends them once the broker is back.
        summary["not_enqueued"] += len(accepted.queued)
    return list(accepted.queued)
