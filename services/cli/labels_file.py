"""`sift labels import FILE`: CSV or JSONL labels, validated in full before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.cli.ingest_file import MAX_REPORTED, csv_header, read_rows, require_columns
from services.enqueue import Enqueuer, make_celery
from services.errors import BrokerUnavailable, InvalidInput
from services.runtime import get_runtime
from services.training import labels


def parse_file(path: Path, *, task: str | None, label_column: str) -> tuple[list[labels.LabelIn], list[int]]:
    """Every label in the file and its line number; InvalidInput naming the bad lines (nothing is written)."""
    needs = [(label_column, "name the column that holds the label with --label-column")]
    if task is None:
        needs.append(("task", "pass --task NAME (`sift tasks list` shows them) or add a task column"))
    header = csv_header(path)
    if header is not None and "event_id" not in header:
        needs.append(("text", "each row's text goes in a column named text (or event_id names an event)"))
    require_columns(path, needs)
    parsed: list[labels.LabelIn] = []
    numbers: list[int] = []
    problems: list[str] = []
    for number, raw in _records(path, task=task, label_column=label_column):
        if "__error__" in raw:
            problems.append(f"line {number}: {raw['__error__']}")
            continue
        try:
            parsed.append(labels.LabelIn.model_validate(raw))
            numbers.append(number)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "record"
            problems.append(f"line {number}: {field}: {first['msg']}")
    _raise(path, problems)
    if not parsed:
        raise InvalidInput(f"{path} holds no labels")
    return parsed, numbers


def _records(path: Path, *, task: str | None, label_column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    def from_csv(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k and v not in (None, "")}

    for number, raw in read_rows(path, csv_row=from_csv):
        if "__error__" not in raw:
            raw = dict(raw)
            if label_column != "label" and label_column in raw:
                raw["label"] = raw.pop(label_column)
            if task and "task" not in raw:
                raw["task"] = task
        yield number, raw


def _lines(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:5])) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")


def _raise(path: Path, problems: list[str]) -> None:
    if problems:
        shown = "\n".join(problems[:MAX_REPORTED])
        more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise InvalidInput(f"{len(problems)} bad record(s) in {path}; nothing was written:\n{shown}{more}")


def import_file(path: Path, *, task: str | None, label_column: str, console: Console) -> dict[str, Any]:
    """Validate the whole file against the tasks and events, then write it in chunks (progress bar)."""
    runtime = get_runtime()
    s = runtime.settings
    items, numbers = parse_file(path, task=task, label_column=label_column)
    with runtime.db.session_scope() as session:
        try:
            labels.check(session, labels=items, max_text_chars=s.max_text_chars)
        except InvalidInput as exc:
            lines: dict[str, list[int]] = {}  # the same problem on many lines (an unknown task) is said once
            for p in exc.details or []:
                lines.setdefault(f"{p['field']}: {p['problem']}", []).append(numbers[p["index"]])
            problems = [f"line {_lines(found)}: {problem}" for problem, found in lines.items()]
            _raise(path, problems)
    enqueuer = Enqueuer(make_celery(s, name="sift-cli"), batch_size=s.batch_size)
    summary: dict[str, Any] = {
        "file": str(path),
        "labels": len(items),
        "written": 0,
        "unchanged": 0,
        "new_events": 0,
        "not_enqueued": 0,
    }
    chunk = s.max_labels_per_request
    columns = (TextColumn("labels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("labels", total=len(items))
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            with runtime.db.session_scope() as session:
                result = labels.record(
                    session, labels=part, source="import", max_labels=chunk, max_text_chars=s.max_text_chars
                )
            summary["written"] += result.written
            summary["unchanged"] += result.unchanged
            summary["new_events"] += len(result.new_event_ids)
            try:
                enqueuer.send(result.new_event_ids, tenant=runtime.tenant)
            except BrokerUnavailable:  # committed as queued: the sweep sends them later
                summary["not_enqueued"] += len(result.new_event_ids)
            progress.advance(bar, len(part))
    return summary
