"""The `sift` command line (Typer). Bad input exits with code 2 and a message that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.keys import keys_app
from services.cli.output import calibration_line, console, version_cells
from services.cli.output import fail as _fail
from services.cli.output import message as _message
from services.cli.output import print_summary as _print_summary
from services.cli.queries import feed, match
from services.cli.reprocess import reprocess
from services.cli.status import status
from services.cli.train import train
from services.cli.webhooks_listen import webhooks_app
from services.config import QUEUES, get_settings
from services.errors import DomainError, InvalidInput

app = typer.Typer(help="Sift: text events in; answers, alerts and recommendations out.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
tasks_app = typer.Typer(help="Classification tasks.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
labels_app = typer.Typer(help="Labels for tasks.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")
faq_app = typer.Typer(help="The FAQ knowledge base (talks to the running API).", no_args_is_help=True)
app.add_typer(faq_app, name="faq")
watchlist_app = typer.Typer(help="The companies whose news is watched for alerts.", no_args_is_help=True)
app.add_typer(watchlist_app, name="watchlist")
models_app = typer.Typer(help="The model registry: versions, metrics, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(webhooks_app, name="webhooks")


SERVERS = ("up", "api", "worker", "beat")
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as JSON instead of a line for people")]


@app.callback()
def _logging(
    ctx: typer.Context,
    tenant: Annotated[
        str | None, typer.Option(help="the tenant commands on the database act for (default SIFT_TENANT)")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also print INFO lines, the libraries' included")
    ] = False,
) -> None:
    # Every command logs the same way (SIFT_LOG_FORMAT, SIFT_LOG_LEVEL) to stderr. A command a person
    # runs prints only warnings unless asked (--verbose or SIFT_LOG_LEVEL); servers keep Sift's INFO lines.
    from services import logs

    settings = get_settings()
    if tenant is not None:
        from services.tenancy.tenants import check_tenant_id

        try:
            settings.tenant = check_tenant_id(tenant)
        except InvalidInput as exc:
            raise _fail(exc.message) from exc
    explicit = "log_level" in settings.model_fields_set
    if verbose and not explicit:
        settings.log_level = "INFO"
    elif not explicit and ctx.invoked_subcommand not in SERVERS:
        settings.log_level = "WARNING"
    logs.setup(settings, libraries=verbose or explicit)


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

    settings = get_settings()
    upgrade(settings.sqlalchemy_url, revision)
    console.print(f"database at {settings.masked()['(database)']} is at {revision}")


HostOpt = Annotated[str | None, typer.Option(help="address the API listens on (default SIFT_HOST, 127.0.0.1)")]
PortOpt = Annotated[int | None, typer.Option(min=1, max=65535, help="port of the API (default SIFT_PORT, 8000)")]


def _listen_on(host: str | None, port: int | None) -> None:
    settings = get_settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port


@app.command()
def up(host: HostOpt = None, port: PortOpt = None) -> None:
    """Serve everything in one process: API, worker and beat (the embedded default)."""
    from services.cli.ownership import claim_data_dir, production_refusal
    from services.cli.serve import serve_all

    _listen_on(host, port)
    code = production_refusal(get_settings(), command="up") or claim_data_dir(get_settings(), command="up")
    if code is not None:
        raise typer.Exit(code)
    raise typer.Exit(serve_all(get_settings()))


@app.command()
def api(host: HostOpt = None, port: PortOpt = None) -> None:
    """Serve the HTTP API only (production: API replicas beside separate workers)."""
    from services.cli.ownership import needs_vector_server, production_refusal

    settings = get_settings()
    code = production_refusal(settings, command="api") or needs_vector_server(settings, command="api")
    if code is not None:
        raise typer.Exit(code)
    import uvicorn

    from services.api.app import create_app

    _listen_on(host, port)
    uvicorn.run(create_app(), host=settings.host, port=settings.port, log_level="warning", log_config=None)


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues to consume")] = ",".join(QUEUES),
    pool: Annotated[str, typer.Option(help="solo (one process per GPU) or prefork")] = "solo",
    concurrency: Annotated[int, typer.Option(min=1)] = 1,
    beat: Annotated[bool, typer.Option("--beat", help="also run beat in this worker (one per deployment)")] = False,
    own_store: Annotated[
        bool,
        typer.Option(
            "--own-store",
            help="without SIFT_QDRANT_URL: this worker is the one process of the embedded vector store "
            "(one pool child; no separate API may serve vectors)",
        ),
    ] = False,
) -> None:
    """Run a Celery worker (`solo` keeps the model and any CUDA context in this one process)."""
    from services.cli.ownership import claim_data_dir, needs_vector_server, production_refusal

    settings = get_settings()
    processes = concurrency if pool == "prefork" else 1
    refused = production_refusal(settings, command="worker") or needs_vector_server(
        settings, command="worker", own_store=own_store, processes=processes
    )
    if refused is None and settings.embedded_vectors:
        refused = claim_data_dir(settings, command="worker")
    if refused is not None:
        raise typer.Exit(refused)
    from worker.app import app as celery_app

    if pool == "prefork":  # the children inherit these settings: each takes its share of the cores
        settings.torch_threads = settings.threads_per_process(concurrency)
    argv = ["worker", f"--queues={queues}", f"--pool={pool}", f"--concurrency={concurrency}", "--without-gossip"]
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    celery_app.worker_main(argv=[*argv, f"--loglevel={settings.log_level}"])


@app.command()
def beat() -> None:
    """Run the beat scheduler (exactly one per deployment)."""
    from services.cli.ownership import production_refusal

    if (code := production_refusal(get_settings(), command="beat")) is not None:
        raise typer.Exit(code)
    from worker.app import app as celery_app

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
    wait: Annotated[bool, typer.Option("--wait", help="then follow them until processed (`sift up` runs)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load events from a file: validated, written idempotently, enqueued; progress bar and summary."""
    from services.cli.ingest_file import ingest_file

    _print_summary(
        lambda: ingest_file(file, default_kind=kind, chunk=chunk, console=console, wait=wait), as_json=as_json
    )


@tasks_app.command("list")
def tasks_list() -> None:
    """Print every task with its kind and labels."""
    from services.classify import tasks
    from services.runtime import get_runtime

    table = Table("task", "kind", "labels", "open", "fine-tune")
    with get_runtime().db.session_scope() as session:
        for task in tasks.list_tasks(session):
            names = [d.name for d in tasks.label_defs(task)]
            shown = ", ".join(names[:8]) + (f" (+{len(names) - 8})" if len(names) > 8 else "")
            table.add_row(task.name, task.kind, shown or "-", str(task.open_labels), str(task.fine_tune))
    Console().print(table)


@tasks_app.command("add")
def tasks_add(
    name: str,
    kind: Annotated[str, typer.Option(help="ticket, news or product")],
    label: Annotated[list[str] | None, typer.Option(help="a label, or label=description; repeat")] = None,
    open_labels: Annotated[bool, typer.Option("--open-labels", help="learn label names from the data")] = False,
) -> None:
    """Add a classification task."""
    from services.classify import tasks
    from services.runtime import get_runtime

    defs = []
    for item in label or []:
        label_name, _, description = item.partition("=")
        defs.append(tasks.LabelDef(label_name.strip(), description.strip() or tasks.describe(label_name)))
    try:
        with get_runtime().db.session_scope() as session:
            tasks.add_task(session, name=name, kind=kind, labels=defs, open_labels=open_labels)
    except DomainError as exc:
        raise _fail(_message(exc)) from exc
    console.print(f"task {name} on {kind}: {len(defs)} label(s)")


@labels_app.command("import")
def labels_import(
    file: Annotated[Path, typer.Argument(help="CSV or JSONL with text or event_id, task, label")],
    task: Annotated[str | None, typer.Option(help="task for rows that have none")] = None,
    label_column: Annotated[str, typer.Option(help="the column that holds the label")] = "label",
    as_json: JsonOpt = False,
) -> None:
    """Import labels: the whole file is checked first; a bad line exits 2 and nothing is written."""
    from services.cli.labels_file import import_file

    _print_summary(lambda: import_file(file, task=task, label_column=label_column, console=console), as_json=as_json)


@faq_app.command("import")
def faq_import(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV: id, question, answer, paraphrases, tags, locale")],
    chunk: Annotated[int, typer.Option(min=1, max=1000, help="entries per request")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Import FAQ entries: the whole file is checked first, then sent to the API in chunks."""
    from services.cli.faq_file import import_file

    _print_summary(lambda: import_file(file, settings=get_settings(), chunk=chunk, console=console), as_json=as_json)


@faq_app.command("calibrate")
def faq_calibrate(as_json: JsonOpt = False) -> None:
    """Fit match confidence and the abstain threshold on held-out labeled tickets: tickets labeled
    (task `intent`) with the id of the FAQ entry that answers them. Until then the threshold is
    derived from the FAQ base's own paraphrases."""
    from services.cli import api_client

    _print_summary(
        lambda: api_client.call(get_settings().api_base_url, "POST", "/v1/match:calibrate"),
        as_json=as_json,
        line=calibration_line,
    )


@watchlist_app.command("import")
def watchlist_import(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV: entity, name, ticker, aliases (| between them)")],
    as_json: JsonOpt = False,
) -> None:
    """Import watched companies: the whole file is checked first; a bad line exits 2, nothing written."""
    from services.cli.watchlist_file import import_file

    _print_summary(lambda: import_file(file), as_json=as_json)


@app.command("alerts")
def alerts_list(
    state: Annotated[str | None, typer.Option(help="open, acknowledged or cleared")] = "open",
    entity: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Alerts in a table (open ones by default), newest first."""
    from services.alerts import rules as alerts
    from services.runtime import get_runtime

    if state not in (None, "open", "acknowledged", "cleared"):
        raise _fail(f"--state is open, acknowledged or cleared, not {state!r}")
    table = Table("id", "entity", "rule", "severity", "state", "window", "figures", "events")
    with get_runtime().db.session_scope() as session:
        for a in alerts.list_alerts(session, state=state, entity=entity, limit=limit):
            window = f"{a.window_start:%Y-%m-%d %H:%M}–{a.window_end:%H:%M}"
            shown = ", ".join(
                f"{k}={v}" for k, v in a.figures.items() if k in ("volume", "negatives", "share", "z", "drop", "score")
            )
            table.add_row(str(a.id), a.entity, a.rule, a.severity, a.state, window, shown, str(len(a.event_ids)))
    Console().print(table)


@models_app.command("list")
def models_list(task: Annotated[str | None, typer.Option()] = None) -> None:
    """Model versions, newest first, with their holdout metrics."""
    from services.runtime import get_runtime
    from services.training import registry

    table = Table("version", "task", "status", "holdout", "baseline", "trained on", "created")
    with get_runtime().db.session_scope() as session:
        for v in registry.list_versions(session, task=task):
            quality, baseline, data = version_cells(v.task, v.metrics, v.snapshot)
            table.add_row(v.version, v.task, v.status, quality, baseline, data, f"{v.created_at:%Y-%m-%d %H:%M}")
    Console().print(table)


@models_app.command("activate")
def models_activate(version: str) -> None:
    """Make a version active (rollback); re-indexes first when it uses another encoder."""
    from services.enqueue import make_celery, send
    from services.runtime import get_runtime
    from services.task_names import REINDEX
    from services.training import runs

    runtime = get_runtime()
    try:
        with runtime.db.session_scope() as session:
            job = runs.activate(session, version=version, settings=runtime.settings)
    except DomainError as exc:
        raise _fail(_message(exc)) from exc
    if job is None:
        console.print(f"{version} is active; workers serve it within {runtime.settings.model_reload_s:g} s")
        return
    send(make_celery(runtime.settings, name="sift-cli"), REINDEX, job, runtime.tenant)
    console.print(f"{version} needs its own encoder: re-index job {job} queued; it becomes active when the job is done")


app.command()(train)
app.command()(reprocess)
app.command()(match)
app.command()(feed)
app.command()(status)


if __name__ == "__main__":
    app()
