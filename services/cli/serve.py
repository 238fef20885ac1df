"""`sift up`: the API, a worker and beat in one process.

The embedded vector store (Qdrant Edge) is single-process, so the process that owns it serves
both the API and the worker. With a Qdrant server, PostgreSQL and Redis configured, the same
code runs; there `sift api`, `sift worker` and `sift beat` may also run as separate processes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from rich.console import Console

from services.config import DEFAULT_TENANT, QUEUES, Settings
from services.db.migrate import upgrade
from services.runtime import Runtime, get_runtime
from services.tenancy import tenants

log = logging.getLogger(__name__)


def serve_all(settings: Settings) -> int:
    """Upgrade the database, start the API and beat in threads and the worker in this thread;
    returns an exit code once the worker stops (SIGINT / SIGTERM)."""
    import uvicorn
    from celery.beat import EmbeddedService

    from services.api.app import create_app
    from worker.app import app as celery_app

    console = Console(stderr=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    runtime = get_runtime()
    first_key = _first_start_key(runtime)
    if first_key is not None:
        console.print(
            f"First start: tenant {DEFAULT_TENANT!r} created, with this admin key "
            f"(saved to {settings.saved_key_file}, which the CLI reads):\n  {first_key}"
        )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime), host=settings.host, port=settings.port, log_level="warning", log_config=None
        )
    )
    api_thread = threading.Thread(target=on_one_core, args=(server.run,), name="sift-api", daemon=True)
    api_thread.start()
    if not _wait_started(server, api_thread):
        console.print(
            f"[red]error:[/red] the API could not listen on {settings.host}:{settings.port}: the port is in use "
            f"or the address is not this machine's. Choose another with `sift up --port N` (or SIFT_PORT=N; "
            f"the address: --host / SIFT_HOST)."
        )
        return 1
    console.print(f"Sift API listening on http://{settings.host}:{settings.port}  (OpenAPI: /docs, ready: /readyz)")
    beat = EmbeddedService(celery_app, thread=True, schedule_filename=str(settings.data_dir / "celerybeat-schedule"))
    beat.start()
    try:
        worker = celery_app.Worker(
            pool="solo",
            concurrency=1,
            queues=list(QUEUES),
            loglevel=settings.log_level,
            without_gossip=True,
            without_mingle=True,
            hostname="sift-up@%h",
        )
        interrupted = _note_sigint_once_ready(worker)
        worker.start()
        # Celery reports a warm shutdown on SIGINT as a failure; here Ctrl+C is the normal way to stop.
        return 0 if interrupted.is_set() and worker.exitcode == 1 else int(worker.exitcode or 0)
    finally:
        beat.stop()
        server.should_exit = True
        api_thread.join(timeout=10)
        runtime.close()


def on_one_core(run: Any) -> None:
    """Run the API on one of the process's cores: its event loop and the request threads it starts
    (they inherit the mask) pass the GIL to each other on that core instead of across cores, which
    cost a third more CPU a request from 8 clients (docs/decisions/api-threads-on-one-core.md). The
    worker and its encode threads keep every core."""
    cores = os.sched_getaffinity(os.getpid()) if hasattr(os, "sched_setaffinity") else set()  # Linux only
    if len(cores) > 1:
        os.sched_setaffinity(0, {max(cores)})  # 0: this thread
    run()


def _first_start_key(runtime: Runtime) -> str | None:
    """On the first start, record the default tenant and make it an admin key, saved (mode 0600)
    where CLI commands on this machine find it; None when the tenant already existed."""
    with runtime.control_db.session_scope() as session:
        if not tenants.add_tenant(session, tenant=DEFAULT_TENANT, name="made by the first `sift up`"):
            return None
        key = tenants.create_key(session, tenant=DEFAULT_TENANT, scopes=["admin"], name="first start")
        path = runtime.settings.saved_key_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:  # written before the commit: a crash leaves no key nobody knows
            file.write(key.token + "\n")
    return key.token


def _note_sigint_once_ready(worker: Any) -> threading.Event:
    """An event set when SIGINT arrives, by wrapping the handler Celery installs for it."""
    from celery.signals import worker_ready

    interrupted = threading.Event()

    def wrap(**_: Any) -> None:
        original = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            interrupted.set()
            if callable(original):
                original(signum, frame)

        signal.signal(signal.SIGINT, on_sigint)

    worker_ready.connect(wrap, weak=False, sender=None)
    return interrupted


def _wait_started(server: object, thread: threading.Thread, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if getattr(server, "started", False):
            return True
        if not thread.is_alive():
            return False
        time.sleep(0.05)
    return False
