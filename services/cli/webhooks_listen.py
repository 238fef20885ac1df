"""`sift webhooks listen`: a small local receiver that verifies each delivery as a real receiver
would (Standard Webhooks, the spec's library) and prints it; for trying webhooks on one machine."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated

import typer
from rich.console import Console

from services.alerts import signing
from services.cli.output import fail
from services.config import get_settings

webhooks_app = typer.Typer(help="Webhook helpers.", no_args_is_help=True)


@webhooks_app.command("listen")
def listen(
    secret: Annotated[
        str | None, typer.Option(help="the webhook's secret, plain or whsec_ (default SIFT_WEBHOOK_SECRET)")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8765,
    count: Annotated[int, typer.Option(min=0, help="exit after this many verified deliveries (0: never)")] = 0,
) -> None:
    """Receive webhooks on http://HOST:PORT/, verify each signature and print the delivery (Ctrl+C stops)."""
    configured = get_settings().webhook_secret
    key = secret or (configured.get_secret_value() if configured else "")
    if not key:
        raise fail("give the webhook's secret: --secret SECRET (or SIFT_WEBHOOK_SECRET)")
    out = Console(soft_wrap=True)
    done = threading.Event()
    verified = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not signing.verify(key, body, dict(self.headers.items())):
                out.print(f"refused a delivery to {self.path}: its signature does not verify", markup=False)
                self.send_response(400)
                self.end_headers()
                return
            self.send_response(204)
            self.end_headers()
            out.print(f"verified {self.headers.get('webhook-id')}: {body.decode()}", markup=False, highlight=False)
            verified[0] += 1
            if count and verified[0] >= count:
                done.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port} ({exc.strerror}): choose another with --port N") from exc
    Console(stderr=True).print(f"listening on http://{host}:{port}/ (Ctrl+C stops)")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
