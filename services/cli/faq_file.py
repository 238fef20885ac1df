"""`sift faq import FILE`: JSONL or CSV entries, validated in full, then sent to the running API
in bulk chunks (the API embeds them and owns the vector store).

CSV columns: id, question, answer, paraphrases ("|" between them), tags ("|"), locale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.cli import api_client
from services.cli.ingest_file import MAX_REPORTED, read_rows, require_columns
from services.config import Settings
from services.errors import InvalidInput
from services.matching import faq

LIST_COLUMNS = ("paraphrases", "tags")


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
    for key in LIST_COLUMNS:
        if isinstance(out.get(key), str):
            out[key] = [part.strip() for part in out[key].split("|") if part.strip()]
    return out


def parse_file(path: Path, *, limits: faq.FaqLimits) -> list[faq.FaqIn]:
    """Every entry in the file; InvalidInput naming the bad lines (nothing is sent)."""
    fix = "the columns are id, question, answer, paraphrases, tags, locale"
    require_columns(path, [(c, fix) for c in ("id", "question", "answer")])
    parsed: list[faq.FaqIn] = []
    problems: list[str] = []
    lines: dict[str, int] = {}
    for number, raw in read_rows(path, csv_row=_csv_row):
        if "__error__" in raw:
            problems.append(f"line {number}: {raw['__error__']}")
            continue
        try:
            item = faq.FaqIn.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            problems.append(f"line {number}: {'.'.join(str(p) for p in first['loc']) or 'record'}: {first['msg']}")
            continue
        try:
            faq.check(faqs=[item], limits=limits)
        except InvalidInput as exc:
            problems.append(f"line {number}: {exc.details[0]['field']}: {exc.details[0]['problem']}")
        if item.id in lines:
            problems.append(f"line {number}: id {item.id!r} already on line {lines[item.id]}")
        lines[item.id] = number
        parsed.append(item)
    if problems:
        shown = "\n".join(problems[:MAX_REPORTED])
        more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise InvalidInput(f"{len(problems)} bad record(s) in {path}; nothing was written:\n{shown}{more}")
    if not parsed:
        raise InvalidInput(f"{path} holds no FAQ entries")
    return parsed


def import_file(path: Path, *, settings: Settings, chunk: int, console: Console) -> dict[str, Any]:
    """Validate the whole file, then send it chunk by chunk with a progress bar; each chunk is
    all-or-nothing, and re-running the import is safe (unchanged entries are skipped)."""
    s = settings
    items = parse_file(path, limits=faq.FaqLimits(s.max_faqs_per_request, s.max_paraphrases_per_faq, s.max_text_chars))
    chunk = min(chunk, s.max_faqs_per_request)
    summary: dict[str, Any] = {"file": str(path), "faqs": len(items), "created": 0, "updated": 0, "unchanged": 0}
    columns = (TextColumn("faq"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("faq", total=len(items))
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            body = {"faqs": [item.model_dump() for item in part]}
            written = api_client.call(s.api_base_url, "POST", "/v1/faqs:bulk", json=body)
            for key in ("created", "updated", "unchanged"):
                summary[key] += len(written[key])
            progress.advance(bar, len(part))
    return summary
