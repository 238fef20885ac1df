"""Ingest benchmark: Sift end to end against the bare model, on the same texts, in one run.

    python bench/ingest.py ../shared/data/banking77/train.csv [--limit N] [--mode embedded|redis-pg] [--peer infinity]
                           [--faq]

1. reference: raw `SentenceTransformer.encode(texts, batch_size=32)` of the same model, in this
   process before any server starts (median of --raw-repeats runs); beside it, Sift's own CPU
   encoder (int8) alone on the same texts in worker-sized windows: the pipeline's ceiling;
2. Sift: a fresh `sift up` per request style; events posted as 100-event requests and as
   single-event requests (--clients concurrent HTTP clients); the clock stops when every event
   is `done` in SQL; with --rounds N the texts go through the same server N times (new ids), and
   the server's RSS and peak RSS are read after each round; then the server is stopped and the
   Qdrant points are counted.
3. with --peer infinity: infinity-emb (a batching embedding server, installed by `make peer` in
   its own virtual environment .venv-infinity) serving the same packaged model on this machine,
   torch engine on CPU with its default batching and the same thread count as the reference; the
   same texts posted in the same request styles to its OpenAI-compatible /embeddings endpoint; the
   clock runs from the first post to the last response. It stores nothing.
With --faq, each server first gets the dataset as its FAQ base (one entry per category, its texts
as paraphrases: about 10,000 points for Banking77), so every ticket is matched against a help
desk's base as it is ingested.
With --versus SIFT_X=value, each style runs as given (a) and with that setting (b) instead, a
round of each in turn on fresh servers (an A/B under the same load); prints b / a too.
Prints sentences/s, events/s and the ratios Sift/raw and Sift/int8-alone (and peer/raw) for each
style, and a JSON line.
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from apikey import bearer, saved_key  # noqa: E402

from services.config import Settings  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/14"
PEER_VENV = ROOT / ".venv-infinity"  # built by `make peer`: infinity-emb's pins clash with Sift's stack
PEER_MODEL = "all-MiniLM-L6-v2"  # the name the peer serves the packaged model under


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


def int8_encode(texts: list[str], repeats: int, window: int) -> dict[str, float]:
    """The ceiling of Sift's own pipeline: its CPU encoder (int8, one batch per core, as `sift up`
    loads it) alone on the same texts, in windows of SIFT_BATCH_SIZE texts as a worker encodes them,
    in this process before any server starts (median of repeats)."""
    from services.config import packaged_model_path
    from services.embedding.encoder import Encoder

    with tempfile.TemporaryDirectory(prefix="sift-bench-onnx-") as cache:
        encoder = Encoder.load(packaged_model_path(), device="cpu", backend="onnx-int8", cache_dir=Path(cache))
        encoder.encode(texts[:64])
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(texts), window):
                encoder.encode(texts[i : i + window])
            rates.append(len(texts) / (time.perf_counter() - start))
    del encoder
    return {"median": statistics.median(rates), "runs": rates, "window": window}


def faq_base(path: Path) -> list[dict[str, Any]]:
    """--faq: the dataset itself as an FAQ base, one entry per category with its texts as paraphrases
    (Banking77: 77 entries, about 10,000 points), so every ticket is matched against it at ingest."""
    by_category: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if "category" not in row:
                raise SystemExit(f"--faq needs a 'category' column in {path}")
            if row["text"].strip():
                by_category.setdefault(row["category"], []).append(row["text"])
    return [
        {"id": category, "question": texts[0], "paraphrases": texts[1:], "answer": f"answer for {category}"}
        for category, texts in sorted(by_category.items())
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `sift up` in a fresh data dir (and, in redis-pg mode, a fresh database); `headers` carry the
    admin key its first start saved in the data dir."""

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
            [sys.executable, "-m", "services.cli.app", "up"], env=env, cwd=ROOT, stdout=self.log, stderr=self.log
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._wait_ready()
        self.key = saved_key(self.dir)
        self.headers = bearer(self.key)

    def load_faqs(self, faqs: list[dict[str, Any]]) -> None:
        """Write an FAQ base through the API (POST /v1/faqs:bulk, 100 entries a call) before the rounds."""
        for start in range(0, len(faqs), 100):
            body = {"faqs": faqs[start : start + 100]}
            response = httpx.post(f"{self.base}/v1/faqs:bulk", json=body, headers=self.headers, timeout=600)
            if response.status_code != 200:
                raise SystemExit(f"POST /v1/faqs:bulk: {response.status_code} {response.text[:300]}")

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
        if self.proc.poll() is None:  # not ready in time: stop it, or it outlives the bench
            self.proc.kill()
            self.proc.wait()
        log = (self.dir / "up.log").read_text(errors="replace")[-3000:]
        self.cleanup()
        raise SystemExit(f"sift up did not become ready:\n{log}")

    def stop(self) -> dict[str, int]:
        """Stop the server; count done rows and points (the embedded store is free once it stops)."""
        self.halt()
        counts = self.counts()
        self.cleanup()
        return counts

    def halt(self) -> None:
        """SIGTERM the server and wait for it to exit."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)

    def counts(self) -> dict[str, int]:
        """Rows, done rows and Qdrant points, read once the server has stopped."""
        engine = sa.create_engine(self.db_url)
        with engine.connect() as conn:
            rows = int(conn.scalar(sa.text("SELECT count(*) FROM events")) or 0)
            done = int(conn.scalar(sa.text("SELECT count(*) FROM events WHERE status='done'")) or 0)
        engine.dispose()
        from services.vectors import open_store

        store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=self.dir / "qdrant")
        points = store.count("sift_ticket")
        store.close()
        return {"rows": rows, "done": done, "points": points}

    def cleanup(self) -> None:
        """Drop the bench database (redis-pg) and remove the data dir."""
        if self.db_name:
            _admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        shutil.rmtree(self.dir, ignore_errors=True)


def _admin(statement: str) -> None:
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def post_bodies(
    base: str,
    path: str,
    bodies: list[str],
    clients: int,
    status: int,
    count: Callable[[bytes], int] | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """POST the bodies with `clients` keep-alive connections (with `headers`: Sift's API key; the peer
    has none); returns the sum of `count(response body)`.
    The producer shares this machine's two cores with the server, so it uses the lightest client the
    standard library has (http.client)."""
    host, port = base.removeprefix("http://").split(":")
    local = threading.local()
    sent = {"content-type": "application/json", **(headers or {})}

    def send(body: str) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", path, body, sent)
        response = conn.getresponse()
        payload = response.read()
        if response.status != status:
            raise SystemExit(f"POST {path} failed: {response.status} {payload[:300]!r}")
        return count(payload) if count else 0

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return sum(pool.map(send, bodies))


def post_all(server: Server, texts: list[str], per_request: int, clients: int, prefix: str = "b") -> None:
    """POST the texts to Sift as `ticket` events, `per_request` events a request."""
    events = [{"id": f"{prefix}{i}", "kind": "ticket", "text": t} for i, t in enumerate(texts)]
    bodies = [json.dumps({"events": events[i : i + per_request]}) for i in range(0, len(events), per_request)]
    post_bodies(server.base, "/v1/events", bodies, clients, 202, headers=server.headers)


def wait_done(server: Server, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.base}/v1/stats", headers=server.headers, timeout=10)
        response.raise_for_status()
        events = response.json()["events"].get("ticket", {})
        if events.get("done", 0) + events.get("failed", 0) >= n:
            return
        time.sleep(0.5)  # polling is cheap but not free: it shares the two cores with the worker
    raise SystemExit(f"not all {n} events finished within {timeout_s}s")


def memory_mib(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and its peak so far (VmHWM), in MiB."""
    kib = proc_status_kib(pid, {"rss_mib": "VmRSS", "peak_rss_mib": "VmHWM"})
    return {name: value / 1024 for name, value in kib.items()}


def proc_status_kib(pid: int, fields: dict[str, str]) -> dict[str, int]:
    """Memory figures of a process from /proc/<pid>/status, in KiB: {name: its field there}."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(status[field].split()[0]) for name, field in fields.items()}


@contextmanager
def console_page(server: Server) -> Iterator[Callable[[], dict[str, float]]]:
    """A headless Chromium (tests/browser.py) signed in on the console's Pipeline page, which polls
    while the run goes; yields a function reading the server's count of those polls and the seconds
    it spent answering them (its two routes: GET /v1/pipeline, GET /v1/events)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import chromium

    with chromium() as driver:
        driver.get(f"{server.base}/console/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "key").is_displayed())
        driver.find_element(By.ID, "key").send_keys(server.key)
        driver.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pipeline-tiles .tile"))
        yield lambda: console_load(server)


def console_load(server: Server) -> dict[str, float]:
    """Requests to the Pipeline page's two routes and the seconds spent answering them, from /metrics."""
    found = {"polls": 0.0, "seconds": 0.0}
    for line in httpx.get(f"{server.base}/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if (
            not any(f'route="{route}"' in name for route in ("/v1/pipeline", "/v1/events"))
            or 'method="GET"' not in name
        ):
            continue
        if name.startswith("sift_http_request_duration_seconds_count"):
            found["polls"] += float(value)
        elif name.startswith("sift_http_request_duration_seconds_sum"):
            found["seconds"] += float(value)
    return found


def run_style(
    texts: list[str],
    mode: str,
    per_request: int,
    clients: int,
    env: dict[str, str],
    rounds: int,
    console: bool = False,
    faqs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`rounds` consecutive runs of every text (new ids each round) through one server: events/s
    per round (the median is the result) and the server's memory after each round; with console,
    while the console's Pipeline page is open in a headless browser; with faqs, that FAQ base is
    written first (its time is not counted)."""
    server = Server(mode, env)
    if faqs:
        server.load_faqs(faqs)
    with console_page(server) if console else nullcontext(lambda: {"polls": 0.0, "seconds": 0.0}) as load:
        result = _rounds(server, texts, per_request, clients, rounds)
        result["console"] = load()
    return {**result, **server.stop()}


def _rounds(server: Server, texts: list[str], per_request: int, clients: int, rounds: int) -> dict[str, Any]:
    per_round = []
    for n in range(rounds):
        start = time.perf_counter()
        post_all(server, texts, per_request, clients, prefix=f"r{n}-")
        posted = time.perf_counter() - start
        wait_done(server, len(texts) * (n + 1), timeout_s=3600)
        elapsed = time.perf_counter() - start
        per_round.append(
            {
                "seconds": elapsed,
                "post_seconds": posted,
                "events_per_s": len(texts) / elapsed,
                **memory_mib(server.proc.pid),
            }
        )
    return {
        "per_request": per_request,
        "clients": clients,
        "events_per_s": statistics.median(r["events_per_s"] for r in per_round),
        "rounds": per_round,
    }


def run_versus(
    texts: list[str],
    mode: str,
    per_request: int,
    clients: int,
    env: dict[str, str],
    other: dict[str, str],
    rounds: int,
    faqs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The same style with the server's settings as given (a) and with `other` on top of them (b),
    alternating a round of each, every round on a fresh server, so both see the same load; the
    medians, the per-round figures and the median of the per-round ratios b / a."""
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for _ in range(rounds):
        for name, settings in (("a", env), ("b", {**env, **other})):
            result = run_style(texts, mode, per_request, clients, settings, 1, faqs=faqs)
            if result["done"] != len(texts) or result["points"] != len(texts):
                raise SystemExit(f"{name}: {result['done']} done and {result['points']} points for {len(texts)} events")
            runs[name].append(result)
    rates = {name: [r["events_per_s"] for r in results] for name, results in runs.items()}
    return {
        "per_request": per_request,
        "clients": clients,
        "other": other,
        "events_per_s": {name: statistics.median(values) for name, values in rates.items()},
        "rounds": rates,
        "ratio_b_to_a": statistics.median(b / a for a, b in zip(rates["a"], rates["b"], strict=True)),
    }


class PeerServer:
    """infinity-emb (`infinity_emb v2`) from .venv-infinity, serving the packaged model on a free port."""

    def __init__(self, executable: Path, threads: int) -> None:
        from services.config import packaged_model_path

        self.dir = Path(tempfile.mkdtemp(prefix="sift-bench-peer-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # its own defaults (batch size 32, dtype auto = float32 on CPU, no torch.compile): no INFINITY_* from here
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INFINITY_", "SIFT_"))}
        env.update(
            HF_HUB_OFFLINE="1",
            DO_NOT_TRACK="1",  # its anonymous usage statistics (posthog)
            INFINITY_ANONYMOUS_USAGE_STATS="0",
            OMP_NUM_THREADS=str(threads),  # the reference's torch.set_num_threads
            MKL_NUM_THREADS=str(threads),
            HOME=str(self.dir),  # any cache it writes goes to the temp dir
        )
        command = [
            str(executable), "v2",
            "--model-id", packaged_model_path(),
            "--served-model-name", PEER_MODEL,
            "--engine", "torch",
            "--device", "cpu",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--log-level", "warning",
        ]  # fmt: skip
        self.log_path = self.dir / "peer.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, env=env, cwd=self.dir, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 300  # it loads the model and warms it up before it answers
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"infinity_emb did not become ready:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def peer_executable() -> Path:
    """The peer's entry point in its own virtual environment; exit 2 with the fix when it is absent."""
    executable = PEER_VENV / "bin" / "infinity_emb"
    if not os.access(executable, os.X_OK):
        print(
            f"--peer infinity needs infinity-emb in {PEER_VENV.relative_to(ROOT)}/ ({executable} not found):"
            " run `make peer` first",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return executable


def peer_version() -> str:
    found = sorted(PEER_VENV.glob("lib/python*/site-packages/infinity_emb-*.dist-info"))
    return found[-1].name.removeprefix("infinity_emb-").removesuffix(".dist-info") if found else "unknown"


def run_peer(texts: list[str], styles: list[int], clients_single: int, threads: int) -> list[dict[str, Any]]:
    """One infinity-emb server for all styles (it keeps no state between requests)."""
    server = PeerServer(peer_executable(), threads)
    results = []
    try:
        for style in styles:
            clients = clients_single if style == 1 else 2
            # base64 is what the OpenAI client asks for by default, and the cheapest answer to encode
            bodies = [
                json.dumps({"model": PEER_MODEL, "input": texts[i : i + style], "encoding_format": "base64"})
                for i in range(0, len(texts), style)
            ]
            start = time.perf_counter()
            embeddings = post_bodies(
                server.base, "/embeddings", bodies, clients, 200, lambda payload: payload.count(b'"embedding":')
            )
            elapsed = time.perf_counter() - start
            if embeddings != len(texts):
                raise SystemExit(f"infinity_emb returned {embeddings} embeddings for {len(texts)} texts")
            results.append(
                {
                    "per_request": style,
                    "clients": clients,
                    "seconds": elapsed,
                    "texts_per_s": len(texts) / elapsed,
                    "embeddings": embeddings,
                }
            )
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="CSV with a 'text' column (e.g. ../shared/data/banking77/train.csv)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N texts")
    parser.add_argument("--mode", choices=["embedded", "redis-pg"], default="embedded")
    parser.add_argument("--styles", default="100,1", help="events per request, comma-separated")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients for single-event requests")
    parser.add_argument("--raw-repeats", type=int, default=3)
    parser.add_argument(
        "--console",
        choices=["off", "on", "both"],
        default="off",
        help="keep the console's Pipeline page open in headless Chromium during each run (both: without, then with)",
    )
    parser.add_argument("--env", action="append", default=[], help="extra SIFT_X=value for the server")
    parser.add_argument(
        "--faq", action="store_true", help="write the dataset as an FAQ base (one entry per category) before each run"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="consecutive runs of the texts per server (memory growth across runs)"
    )
    parser.add_argument(
        "--peer", choices=["infinity"], default=None, help="also measure infinity-emb on the same texts (`make peer`)"
    )
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        help="SIFT_X=value: run each style with and without it, a round of each in turn, each on a fresh server",
    )
    args = parser.parse_args()
    if args.peer:
        peer_executable()  # fail before the long runs, not after them
    texts = load_texts(args.dataset, args.limit)
    faqs = faq_base(args.dataset) if args.faq else None
    styles = [int(s) for s in args.styles.split(",")]
    threads = len(os.sched_getaffinity(0))
    env = dict(item.split("=", 1) for item in args.env)
    raw = raw_encode(texts, args.raw_repeats)
    window = int(env.get("SIFT_BATCH_SIZE", Settings().batch_size))
    int8 = int8_encode(texts, args.raw_repeats, window)
    print(f"texts: {len(texts)} from {args.dataset}; mode: {args.mode}; cores: {threads}")
    if faqs:
        print(f"FAQ base before each run: {len(faqs)} entries, {sum(1 + len(f['paraphrases']) for f in faqs)} texts")
    print(f"raw SentenceTransformer.encode (batch 32): {raw['median']:.1f} sentences/s (median of {args.raw_repeats})")
    print(
        f"Sift's int8 encoder alone ({window}-text windows): {int8['median']:.1f} sentences/s"
        f" = {int8['median'] / raw['median']:.2f} x raw (median of {args.raw_repeats})"
    )
    if args.versus:
        versus(args, texts, styles, env, raw, int8)
        return
    results = []
    consoles = {"off": [False], "on": [True], "both": [False, True]}[args.console]
    for style, console in ((style, console) for style in styles for console in consoles):
        clients = args.clients if style == 1 else 2
        result = run_style(texts, args.mode, style, clients, env, args.rounds, console=console, faqs=faqs)
        if console:
            busy = result["console"]["seconds"] / sum(r["seconds"] for r in result["rounds"])
            print(
                f"console Pipeline page open: {result['console']['polls']:.0f} requests answered in"
                f" {result['console']['seconds']:.2f} s = {busy:.2%} of the run's wall time"
            )
        result["ratio_to_raw"] = result["events_per_s"] / raw["median"]
        result["ratio_to_int8"] = result["events_per_s"] / int8["median"]
        results.append(result)
        rounds = "; ".join(
            f"{r['events_per_s']:.1f}/s, RSS {r['rss_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f})"
            for r in result["rounds"]
        )
        print(
            f"sift end to end, {style:>3}-event requests ({clients} clients): {result['events_per_s']:.1f} events/s"
            f" = {result['ratio_to_raw']:.2f} x raw = {result['ratio_to_int8']:.2f} x int8 alone;"
            f" rows {result['rows']}, done {result['done']}, points {result['points']}; rounds: {rounds}"
        )
    report: dict[str, Any] = {
        "dataset": str(args.dataset),
        "n": len(texts),
        "mode": args.mode,
        "raw": raw,
        "int8_alone": int8,
        "sift": results,
    }
    if args.peer:
        version = peer_version()
        peer_results = run_peer(texts, styles, args.clients, threads)
        for result in peer_results:
            result["ratio_to_raw"] = result["texts_per_s"] / raw["median"]
            print(
                f"infinity-emb {version} (torch, CPU, its batching defaults), {result['per_request']:>3}-text requests"
                f" ({result['clients']} clients): {result['texts_per_s']:.1f} texts/s"
                f" = {result['ratio_to_raw']:.2f} x raw; embeddings {result['embeddings']}"
            )
        report["peer"] = {"name": "infinity-emb", "version": version, "engine": "torch", "results": peer_results}
    print(json.dumps(report))


def versus(
    args: argparse.Namespace,
    texts: list[str],
    styles: list[int],
    env: dict[str, str],
    raw: dict[str, Any],
    int8: dict[str, Any],
) -> None:
    """--versus: each style as given (a) and with the --versus settings (b), rounds alternating."""
    other = dict(item.split("=", 1) for item in args.versus)
    faqs = faq_base(args.dataset) if args.faq else None
    results = []
    for style in styles:
        clients = args.clients if style == 1 else 2
        result = run_versus(texts, args.mode, style, clients, env, other, args.rounds, faqs=faqs)
        results.append(result)
        for name in ("a", "b"):
            rate = result["events_per_s"][name]
            rounds = ", ".join(f"{r:.1f}" for r in result["rounds"][name])
            print(
                f"sift end to end, {style:>3}-event requests ({clients} clients), {name}"
                f" {'(as given)' if name == 'a' else other}: {rate:.1f} events/s = {rate / raw['median']:.2f} x raw"
                f" = {rate / int8['median']:.2f} x int8 alone; rounds: {rounds}"
            )
        print(f"  b / a, median of the rounds' ratios: {result['ratio_b_to_a']:.3f}")
    report = {"dataset": str(args.dataset), "n": len(texts), "mode": args.mode, "raw": raw, "int8_alone": int8}
    print(json.dumps({**report, "versus": results}))


if __name__ == "__main__":
    main()
