"""Ingest benchmark: Sift end to end against the bare model, on the same texts, in one run.

    python bench/ingest.py ../shared/data/banking77/train.csv [--limit N] [--mode embedded|redis-pg]

1. reference: raw `SentenceTransformer.encode(texts, batch_size=32)` of the same model, in this
   process before any server starts (median of --raw-repeats runs);
2. Sift: a fresh `sift up` per request style; events posted as 100-event requests and as
   single-event requests (--clients concurrent HTTP clients); the clock stops when every event
   is `done` in SQL; then the server is stopped and the Qdrant points are counted.
Prints sentences/s, events/s and the ratio Sift/raw for each style, and a JSON line.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/14"


def load_texts(path: Path, limit: int | None) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row.get("text", "").strip()]
    return texts[:limit] if limit else texts


def raw_encode(texts: list[str], repeats: int) -> dict[str, float]:
    """The reference: the bare model on the same texts, batch 32, all cores of this machine."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    from services.config import packaged_model_path

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = SentenceTransformer(packaged_model_path(), device="cpu")
    model.encode(texts[:64], batch_size=32)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True)
        rates.append(len(texts) / (time.perf_counter() - start))
    del model
    return {"median": statistics.median(rates), "runs": rates}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `sift up` in a fresh data dir (and, in redis-pg mode, a fresh database)."""

    def __init__(self, mode: str, extra_env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sift-bench-"))
        self.port = free_port()
        self.db_name: str | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
        env.update(SIFT_DATA_DIR=str(self.dir), SIFT_PORT=str(self.port), SIFT_LOG_LEVEL="WARNING", **extra_env)
        if mode == "redis-pg":
            self.db_name = f"sift_bench_{uuid.uuid4().hex[:8]}"
            _admin(f'CREATE DATABASE "{self.db_name}"')
            import redis

            redis.Redis.from_url(REDIS).flushdb()
            env.update(SIFT_DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0] + f"/{self.db_name}", SIFT_BROKER_URL=REDIS)
        self.db_url = env.get("SIFT_DATABASE_URL", f"sqlite:///{self.dir / 'sift.db'}")
        self.log = (self.dir / "up.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"], env=env, cwd=ROOT, stdout=self.log, stderr=self.log
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        raise SystemExit(f"sift up did not become ready:\n{(self.dir / 'up.log').read_text()[-3000:]}")

    def stop(self) -> dict[str, int]:
        """Stop the server; count done rows and points (the embedded store is free once it stops)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        engine = sa.create_engine(self.db_url)
        with engine.connect() as conn:
            rows = int(conn.scalar(sa.text("SELECT count(*) FROM events")) or 0)
            done = int(conn.scalar(sa.text("SELECT count(*) FROM events WHERE status='done'")) or 0)
        engine.dispose()
        from services.vectors import open_store

        store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=self.dir / "qdrant")
        points = store.count("sift_ticket")
        store.close()
        if self.db_name:
            _admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"rows": rows, "done": done, "points": points}


def _admin(statement: str) -> None:
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def post_all(base: str, texts: list[str], per_request: int, clients: int) -> None:
    """POST the events with `clients` keep-alive connections. The producer shares this machine's
    two cores with Sift, so it uses the lightest client the standard library has (http.client)."""
    events = [{"id": f"b{i}", "kind": "ticket", "text": t} for i, t in enumerate(texts)]
    bodies = [json.dumps({"events": events[i : i + per_request]}) for i in range(0, len(events), per_request)]
    host, port = base.removeprefix("http://").split(":")
    local = threading.local()

    def send(body: str) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/v1/events", body, {"content-type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 202:
            raise SystemExit(f"POST failed: {response.status} {payload[:300]!r}")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, bodies))


def wait_done(base: str, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = httpx.get(f"{base}/v1/stats", timeout=10).json()["events"].get("ticket", {})
        if events.get("done", 0) + events.get("failed", 0) >= n:
            return
        time.sleep(0.5)  # polling is cheap but not free: it shares the two cores with the worker
    raise SystemExit(f"not all {n} events finished within {timeout_s}s")


def run_style(texts: list[str], mode: str, per_request: int, clients: int, env: dict[str, str]) -> dict[str, Any]:
    server = Server(mode, env)
    start = time.perf_counter()
    post_all(server.base, texts, per_request, clients)
    posted = time.perf_counter() - start
    wait_done(server.base, len(texts), timeout_s=3600)
    elapsed = time.perf_counter() - start
    counts = server.stop()
    return {
        "per_request": per_request,
        "clients": clients,
        "seconds": elapsed,
        "post_seconds": posted,
        "events_per_s": len(texts) / elapsed,
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="CSV with a 'text' column (e.g. ../shared/data/banking77/train.csv)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N texts")
    parser.add_argument("--mode", choices=["embedded", "redis-pg"], default="embedded")
    parser.add_argument("--styles", default="100,1", help="events per request, comma-separated")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients for single-event requests")
    parser.add_argument("--raw-repeats", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="extra SIFT_X=value for the server")
    args = parser.parse_args()
    texts = load_texts(args.dataset, args.limit)
    env = dict(item.split("=", 1) for item in args.env)
    raw = raw_encode(texts, args.raw_repeats)
    print(f"texts: {len(texts)} from {args.dataset}; mode: {args.mode}; cores: {len(os.sched_getaffinity(0))}")
    print(f"raw SentenceTransformer.encode (batch 32): {raw['median']:.1f} sentences/s (median of {args.raw_repeats})")
    results = []
    for style in (int(s) for s in args.styles.split(",")):
        clients = args.clients if style == 1 else 2
        result = run_style(texts, args.mode, style, clients, env)
        result["ratio_to_raw"] = result["events_per_s"] / raw["median"]
        results.append(result)
        print(
            f"sift end to end, {style:>3}-event requests ({clients} clients): {result['events_per_s']:.1f} events/s"
            f" = {result['ratio_to_raw']:.2f} x raw;"
            f" rows {result['rows']}, done {result['done']}, points {result['points']}"
        )
    print(json.dumps({"dataset": str(args.dataset), "n": len(texts), "mode": args.mode, "raw": raw, "sift": results}))


if __name__ == "__main__":
    main()
