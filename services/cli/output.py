"""What every `sift` command shares: the error console and the mapping of errors to exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from services.errors import DomainError, InvalidInput, NotFound

console = Console(stderr=True)


def fail(text: str, code: int = 2) -> typer.Exit:
    """Print an error; the Exit to raise (2: bad input, 1: a service problem)."""
    console.print(f"[red]error:[/red] {escape(text)}", soft_wrap=True)
    return typer.Exit(code)


def print_summary(
    run: Callable[[], dict[str, Any]], *, as_json: bool = False, line: Callable[[dict[str, Any]], str] | None = None
) -> None:
    """Run a command and print its summary, a line for people (`line`, by default `human`) or JSON
    (as_json): bad input exits 2, a service problem 1."""
    result = exit_codes(run)
    if as_json:
        Console().print_json(json.dumps(result, default=str))
    else:
        Console(soft_wrap=True).print(escape((line or human)(result)), highlight=False)


def human(result: Any) -> str:
    """A short line for people: `file: 30 events, 28 queued, 2 unchanged` (zero counts left out
    unless all are zero; nested objects shown as key=value)."""
    if not isinstance(result, dict):
        return str(result)
    head = str(result["file"]) + ": " if "file" in result else ""
    counts = [(k, v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    shown = [(k, v) for k, v in counts if v] or counts[:1]
    parts = [f"{v:g} {k.replace('_', ' ')}" if isinstance(v, float) else f"{v} {k.replace('_', ' ')}" for k, v in shown]
    for key, value in result.items():
        if key == "file" or (key, value) in counts:
            continue
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict | list))
            parts.append(f"{key.replace('_', ' ')}: {inner}" if inner else "")
        elif isinstance(value, list):
            parts.append(f"{key.replace('_', ' ')}: {', '.join(map(str, value[:10]))}")
        elif value is not None:
            parts.append(f"{key.replace('_', ' ')}: {value}")
    return head + ", ".join(p for p in parts if p)


def calibration_line(result: dict[str, Any]) -> str:
    """`sift faq calibrate` for people: the threshold, what it was fitted for, how it did on the
    held-out tickets, and the models it belongs to."""
    m = result.get("metrics") or {}
    text = (
        f"calibration {result['id']}: matches below confidence {result['threshold']:.4f} abstain "
        f"(fitted for precision {result['target']:g} on the answered)"
    )
    if "n" in m:
        text += (
            f"; on {m['n']} held-out labeled tickets: top-1 {m['top1_accuracy']:.3f}, "
            f"answered {m['answered_share']:.0%}, precision of the answered {m['precision_answered']:.3f}"
        )
    models = [f"intent model {result['intent_version']}"] if result.get("intent_version") else []
    models.append(f"encoder {result['encoder_version']}")
    return f"{text}; for {', '.join(models)}"


def version_cells(task: str, metrics: dict[str, Any], snapshot: dict[str, Any]) -> tuple[str, str, str]:
    """(holdout, baseline, trained on) of a model version for `sift models list`: HR@10 and NDCG@10
    against the serving blend for a recommend version, accuracy and macro-F1 for a classifier's."""
    base = metrics.get("baseline") or {}
    if task == "recommend":
        against = base.get("version") or "hand-set blend"
        baseline = f"{_ranking(base)} ({against})" if _ranking(base) else ""
        data = f"{snapshot['interactions']} interactions" if "interactions" in snapshot else ""
        return _ranking(metrics), baseline, data
    quality = f"accuracy {metrics['accuracy']} macro-F1 {metrics.get('macro_f1', '')}" if "accuracy" in metrics else ""
    baseline = f"accuracy {base['accuracy']}" if "accuracy" in base else ""
    return quality, baseline, f"{snapshot['labels']} labels" if "labels" in snapshot else ""


def _ranking(m: dict[str, Any]) -> str:
    return f"HR@10 {m['hr@10']} NDCG@10 {m['ndcg@10']}" if "hr@10" in m else ""


def exit_codes(run: Callable[[], Any]) -> Any:
    """run()'s result; bad input (invalid, not found, no such file) exits 2, a service problem 1."""
    try:
        return run()
    except (InvalidInput, NotFound, FileNotFoundError) as exc:
        raise fail(message(exc)) from exc
    except DomainError as exc:
        raise fail(message(exc), code=1) from exc


def message(exc: Exception) -> str:
    """An error's message, with its details when it has some."""
    if isinstance(exc, DomainError) and exc.details:
        return f"{exc.message}\n{json.dumps(exc.details, indent=1, default=str)[:2000]}"
    return str(exc)
