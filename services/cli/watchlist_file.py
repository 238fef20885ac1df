"""`sift watchlist import FILE`: JSONL or CSV (entity, name, ticker, aliases with "|" between
them); the whole file is checked first, then written in one transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.alerts import watchlist
from services.cli.ingest_file import MAX_REPORTED, read_rows, require_columns
from services.errors import InvalidInput
from services.runtime import get_runtime


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
    if isinstance(out.get("aliases"), str):
        out["aliases"] = [a.strip() for a in out["aliases"].split("|") if a.strip()]
    return out


def parse_file(path: Path) -> list[tuple[str, watchlist.WatchIn]]:
    """(entity, entry) for every line; InvalidInput naming the bad lines."""
    require_columns(path, [(c, "the columns are entity, name, ticker, aliases") for c in ("entity", "name")])
    parsed: list[tuple[str, watchlist.WatchIn]] = []
    problems: list[str] = []
    for number, raw in read_rows(path, csv_row=_csv_row):
        if "__error__" in raw:
            problems.append(f"line {number}: {raw['__error__']}")
            continue
        entity = str(raw.pop("entity", "") or raw.get("ticker", "")).strip()
        try:
            parsed.append((entity, watchlist.WatchIn.model_validate(raw)))
        except ValidationError as exc:
            first = exc.errors()[0]
            problems.append(f"line {number}: {'.'.join(str(p) for p in first['loc']) or 'record'}: {first['msg']}")
            continue
        if not entity:
            problems.append(f"line {number}: entity: give entity (or ticker)")
    if problems:
        shown = "\n".join(problems[:MAX_REPORTED])
        raise InvalidInput(f"{len(problems)} bad record(s) in {path}; nothing was written:\n{shown}")
    if not parsed:
        raise InvalidInput(f"{path} holds no watchlist entries")
    return parsed


def import_file(path: Path) -> dict[str, Any]:
    """Validate the file, then write every entry (create or replace) in one transaction."""
    entries = parse_file(path)
    with get_runtime().db.session_scope() as session:
        for entity, body in entries:
            watchlist.put(session, entity=entity, body=body)
    return {"file": str(path), "entities": len(entries)}
