"""The `sift` command line (Typer). Bad input exits with code 2 and a message that says what to fix."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.config import QUEUES, get_settings
from services.errors import DomainError, InvalidInput

app = typer.Typer(help="Sift: text events in; answers, alerts and recommendations out.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


def _logging() -> None:
    level = get_settings().log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked)."""
    table = Table("setting", "value")
    for name, value in get_settings().masked().items():
        table.add_row(name, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations to SIFT_DATABASE_URL."""
    from services.db.migrate import upgrade

    _logging()
    settings = get_settings()
    upgrade(settings.sqlalchemy_url, revision)
    console.print(f"database at {settings.masked()['(database)']} is at {revision}")


@app.command()
def up() -> None:
    """Serve everything in one process: API, worker and beat (the embedded default)."""
    from services.serve import serve_all

    _logging()
    try:
        get_settings().check_secrets()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(serve_all(get_settings()))


@app.command()
def api() -> None:
    """Serve the HTTP API only (production: API replicas beside separate workers)."""
    import uvicorn

    from services.api.app import create_app

    _logging()
    settings = get_settings()
    uvicorn.run(create_app(), host=settings.host, port=settings.port, log_level="warning")


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues to consume")] = ",".join(QUEUES),
    pool: Annotated[str, typer.Option(help="solo (one process per GPU) or prefork")] = "solo",
    concurrency: Annotated[int, typer.Option(min=1)] = 1,
    beat: Annotated[bool, typer.Option("--beat", help="also run beat in this worker (one per deployment)")] = False,
) -> None:
    """Run a Celery worker (`solo` keeps the model and any CUDA context in this one process)."""
    from worker.app import app as celery_app

    _logging()
    settings = get_settings()
    argv = ["worker", f"--queues={queues}", f"--pool={pool}", f"--concurrency={concurrency}", "--without-gossip"]
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    celery_app.worker_main(argv=[*argv, f"--loglevel={settings.log_level}"])


@app.command()
def beat() -> None:
    """Run the beat scheduler (exactly one per deployment)."""
    from worker.app import app as celery_app

    _logging()
    schedule = get_settings().data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(argv=["beat", f"--schedule={schedule}", f"--loglevel={get_settings().log_level}"])


@app.command()
def ingest(
    file: Annotated[
        Path, typer.Argument(help="JSONL (one event per line) or CSV (columns: text, kind, id, title, ...)")
    ],
    kind: Annotated[str | None, typer.Option(help="kind for rows that have none")] = None,
    chunk: Annotated[int, typer.Option(min=1, max=1000, help="events per write")] = 500,
) -> None:
    """Load events from a file: validated, written idempotently, enqueued; progress bar and summary."""
    from services.ingest_file import ingest_file

    _logging()
    try:
        summary = ingest_file(file, default_kind=kind, chunk=chunk, console=console)
    except (InvalidInput, FileNotFoundError) as exc:
        raise _fail(_message(exc)) from exc
    except DomainError as exc:
        raise _fail(_message(exc), code=1) from exc
    Console().print_json(json.dumps(summary))


def _message(exc: Exception) -> str:
    if isinstance(exc, DomainError) and exc.details:
        return f"{exc.message}\n{json.dumps(exc.details, indent=1, default=str)[:2000]}"
    return str(exc)


if __name__ == "__main__":
    app()
