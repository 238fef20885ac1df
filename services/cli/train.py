"""`sift train`: a training run in this process, with a live bar (stage, elapsed time, ETA) and a
short summary at the end."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from services.cli.output import console
from services.cli.output import fail as _fail
from services.cli.output import message as _message
from services.errors import DomainError, InvalidInput, NotFound


def train(
    task: Annotated[str | None, typer.Option(help="the task to train (default: every task with new labels)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Train in this process with a progress bar: snapshot, split, fine-tune, evaluate, promote if better."""
    from services.enqueue import make_celery, sender_for
    from services.runtime import get_runtime
    from services.training import registry

    if logging.getLogger().level > logging.INFO:  # --verbose shows the libraries' own bars too
        from services.embedding.encoder import hide_progress_bars

        hide_progress_bars()
    runtime = get_runtime()
    send = sender_for(make_celery(runtime.settings, name="sift-cli"))  # the worker re-indexes or calibrates
    with runtime.db.session_scope() as session:
        names = [task] if task else registry.due_tasks(session, min_new_labels=1)
        names += [] if task else [o.task for o in runtime.trainer.others.values() if o.due(session)]
    if not names:
        console.print("no task has new labels; nothing to train")
        return
    results = []
    for name in names:
        try:
            with runtime.db.session_scope() as session:
                run_id = registry.new_run(session, task=name, trigger="cli", others=list(runtime.trainer.others)).id
            columns = (
                TextColumn(f"{name} {{task.fields[stage]}}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console, refresh_per_second=2) as progress:
                bar = progress.add_task(name, total=1.0, stage="snapshot")
                outcome = runtime.trainer.run(run_id, send=send, progress=_progress_to(progress, bar))
        except (InvalidInput, NotFound) as exc:  # a bad task name or too few labels: the caller's to fix
            raise _fail(_message(exc)) from exc
        except DomainError as exc:
            raise _fail(_message(exc), code=1) from exc
        results.append(
            {
                "task": name,
                "run_id": run_id,
                "version": outcome.version,
                "promoted": outcome.promoted,
                "reindex_job": outcome.reindex_job,
                "metrics": outcome.metrics,
            }
        )
    if as_json:
        Console().print_json(json.dumps(results, default=str))
        return
    for result in results:
        Console(soft_wrap=True).print(summary_line(result), highlight=False, markup=False)


def summary_line(result: dict[str, Any]) -> str:
    """`intent: version v3 promoted (accuracy 0.912, macro-F1 0.905 on 80 held-out; baseline 0.850)`."""
    m = result["metrics"] or {}
    names = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
    figures = [f"{name} {m[k]:.3f}" for k, name in names.items() if isinstance(m.get(k), int | float)]
    held = f" on {m['holdout']} held-out" if m.get("holdout") else ""
    if m.get("folds"):  # few labels: every label trained, the estimate is k-fold
        held = f" by {len(m['folds'])}-fold over {m.get('n')} labels, se {m.get('se')}"
    base = m.get("baseline", {}).get("accuracy") if isinstance(m.get("baseline"), dict) else None
    baseline = f"; active before: accuracy {base:.3f}" if isinstance(base, int | float) else ""
    verdict = "promoted" if result["promoted"] else "kept as a candidate (not better than the active one)"
    line = f"{result['task']}: version {result['version']} {verdict} ({', '.join(figures)}{held}{baseline})"
    if result["reindex_job"] is not None:
        line += f"; re-index job {result['reindex_job']} queued: the worker switches to it when done"
    return line


# Where each stage of a run sits on the one bar: the fine-tuning takes most of the time, and the
# bar only moves forward (the ETA needs that) and is full only when the run is done (the elapsed
# time stops there).
STAGES = {"snapshot": 0.0, "split": 0.05, "linear probe": 0.1, "fine-tune": 0.1, "head": 0.9, "evaluate": 0.95}


def _progress_to(progress: Any, bar: Any) -> Callable[[str, float], None]:
    shown = [0.0]

    def update(stage: str, fraction: float) -> None:
        if stage == "done":
            progress.update(bar, completed=1.0, stage=stage)
            return
        at = STAGES.get(stage)
        if at is None:
            progress.update(bar, stage=stage)
            return
        if stage == "fine-tune":
            at += 0.8 * min(max(fraction, 0.0), 1.0)
        shown[0] = max(shown[0], min(at, 0.99))
        progress.update(bar, completed=shown[0], stage=stage)

    return update
