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


def print_summary(run: Callable[[], dict[str, Any]]) -> None:
    """Run a file command and print its JSON summary: bad input exits 2, a service problem 1."""
    Console().print_json(json.dumps(exit_codes(run)))


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
