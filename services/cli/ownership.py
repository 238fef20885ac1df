"""Who may run where: one owner per data dir, and separate processes only with a vector store server.

Checked when a long-running command starts, before it opens anything, so a second owner exits at
once with the holder named instead of breaking the first one's vector writes.
"""

from __future__ import annotations

from rich.console import Console

from services.config import Settings
from services.vectors import owner

IN_USE = 1  # exit code: another process owns the data dir (retrying later may work)
REFUSED = 2  # exit code: a configuration that cannot work (fix the settings)


def production_refusal(settings: Settings, *, command: str) -> int | None:
    """REFUSED (with one message naming every missing setting) when SIFT_ENV=production meets an
    embedded default; None when the process may start."""
    try:
        settings.check_secrets()
    except ValueError as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] `sift {command}` cannot start: {exc}", highlight=False, soft_wrap=True
        )
        return REFUSED
    return None


def claim_data_dir(settings: Settings, *, command: str) -> int | None:
    """Hold the data dir's owner lock for this process's life; an exit code (and a message on
    stderr) when another process holds it, else None."""
    try:
        owner.acquire(owner.lock_file_for(settings.data_dir))
    except owner.OwnedElsewhere as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] `sift {command}` cannot start: {exc.message}", highlight=False, soft_wrap=True
        )
        return IN_USE
    return None


def needs_vector_server(settings: Settings, *, command: str, own_store: bool = False, processes: int = 1) -> int | None:
    """REFUSED (with a message) when a separate `sift api` or `sift worker` would open the embedded
    vector store, which belongs to one process; None when it may start.

    A worker may own the embedded store on purpose (own_store) when no other process serves vectors,
    e.g. a worker beside an API that only ingests."""
    if not settings.embedded_vectors:
        return None
    if own_store and processes > 1:
        Console(stderr=True).print(
            f"[red]error:[/red] `sift {command} --own-store` runs one pool process (the embedded vector store "
            "belongs to one process): use --pool=solo, or --concurrency=1, or a Qdrant server (SIFT_QDRANT_URL)",
            highlight=False,
            soft_wrap=True,
        )
        return REFUSED
    if own_store:
        return None
    Console(stderr=True).print(
        f"[red]error:[/red] `sift {command}` as a separate process needs a vector store server: set "
        "SIFT_QDRANT_URL (a Qdrant server all processes share), or run everything in one `sift up`. "
        "The embedded store (Qdrant Edge) belongs to one process.",
        highlight=False,
        soft_wrap=True,
    )
    return REFUSED
