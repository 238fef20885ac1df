"""`sift status`: the running API's readiness (GET /readyz) with queue depths and throughput
(GET /v1/stats). It asks the API rather than the servers directly: whether the model is loaded and
the vector store answers is only known in the process that serves them (embedded, the only one
that may open the store). No API answering is itself "not ready": exit code 1."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.cli.output import fail
from services.config import get_settings
from services.errors import DomainError


def status(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
) -> None:
    """Readiness (database, broker, vector store, model), queue depths and events finished per
    minute over the last 1/5/15 minutes; exit code 1 when not ready, 3 when degraded (stuck work)."""
    report = collect(get_settings().api_base_url)
    if as_json:
        Console().print_json(json.dumps(report))
    else:
        show(report)
    if not report["ready"]:
        raise typer.Exit(1)
    if report["status"] == "degraded":
        raise typer.Exit(3)


def collect(base_url: str) -> dict[str, Any]:
    """What the API says about itself; exits 1 when no API answers."""
    from services.cli import api_client

    try:
        code, body = api_client.probe(base_url, "/readyz")
    except DomainError as exc:
        raise fail(exc.message, code=1) from exc
    report: dict[str, Any] = {
        "api": base_url,
        "ready": code == 200,
        "status": body.get("status") if isinstance(body, dict) else None,
        "checks": body.get("checks", {}) if isinstance(body, dict) else {},
    }
    try:
        stats = api_client.call(base_url, "GET", "/v1/stats", timeout=10)
    except DomainError as exc:  # the database is down: readiness says why, the rest is unknown
        report["stats_error"] = exc.message
    else:
        report.update(queues=stats["queues"], throughput=stats["throughput"], events=stats["events"])
    return report


def show(report: dict[str, Any]) -> None:
    """The report as tables."""
    out = Console()
    verdict = "[green]ready[/green]" if report["ready"] else "[red]not ready[/red]"
    if report["ready"] and report["status"] == "degraded":
        verdict = "[yellow]degraded[/yellow]"
    out.print(f"Sift API at {report['api']}: {verdict}")
    checks = Table("check", "state")
    for name, state in report["checks"].items():
        checks.add_row(name, escape(state) if state == "ok" else f"[red]{escape(state)}[/red]")
    out.print(checks)
    if "stats_error" in report:
        out.print(f"[yellow]no queue depths or throughput:[/yellow] {escape(report['stats_error'])}")
        return
    queues = Table("queue", "waiting")
    for name, depth in report["queues"].items():
        queues.add_row(name, "?" if depth is None else str(depth))
    out.print(queues)
    rates = Table("window", "events finished per minute")
    for window, rate in report["throughput"].items():
        rates.add_row(f"last {window}", f"{rate:g}")
    out.print(rates)
    statuses = sorted({s for by_status in report["events"].values() for s in by_status})
    events = Table("events", *statuses)
    for kind, by_status in sorted(report["events"].items()):
        events.add_row(kind, *(str(by_status.get(s, 0)) for s in statuses))
    out.print(events)
