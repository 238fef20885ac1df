"""Soak: a bounded, steady load on a fresh Sift on loopback; are events lost, errors, memory growth?

    python bench/soak.py ../shared/data/banking77/train.csv [--minutes 10] [--rate R] [--per-request 10]
        [--clients 4] [--mode embedded|redis-pg] [--env SIFT_X=value ...]

1. a fresh `sift up` (bench/ingest.py's Server: a temp data dir; redis-pg: a fresh PostgreSQL database
   and Redis db 14 on 127.0.0.1, the vectors embedded in both modes, so API and worker share one process);
2. calibration (unless --rate): --calibrate-s of posting as fast as the server drains (at most
   --backlog events waiting), measuring done/s after a warm-up; the steady rate is 80% of it. Its events
   are drained before the steady phase;
3. steady phase: --minutes at the rate, --per-request events a request from --clients keep-alive
   http.client connections on a fixed schedule (request k is due at k x per_request / rate; a client
   that is late sends at once and the lateness is reported); texts cycled from the CSV with unique ids;
4. every --sample-s: accepted, done, failed (GET /v1/stats), HTTP statuses, queue lag (accepted - done)
   and the RSS of the server process with its children;
5. a bounded wait until every accepted event is done or failed, the server is stopped, and the rows,
   their statuses and the Qdrant points are checked against the accepted ids.
Minutes are counted from the start of the steady phase. Received->done lag comes from the rows'
received_at and processed_at (steady-phase events only). Prints the samples, a summary and a JSON line.
Exit 1 when a bar fails: lost events (accepted, not done or failed), 5xx or connection errors, RSS growth
between minute 2 (or half the run, if shorter) and the end of the steady phase >= --rss-bound %, done
events without their point, or duplicates (points beyond the done rows, an id accepted twice).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import Server, load_texts  # bench/ is not a package: its directory is on sys.path

COLLECTION = "sift_ticket"
STALE_CONNECTION = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


class Load:
    """The producer: events numbered per phase, texts cycled, everything it saw counted."""

    def __init__(self, base: str, texts: list[str], per_request: int) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.texts, self.per_request = texts, per_request
        self.lock = threading.Lock()
        self.next_event = 0
        self.accepted: list[str] = []
        self.statuses: Counter[str] = Counter()
        self.lateness: list[float] = []

    def body(self, phase: str) -> str:
        with self.lock:
            first, self.next_event = self.next_event, self.next_event + self.per_request
        n = len(self.texts)
        events = [
            {"id": f"{phase}{i}", "kind": "ticket", "text": self.texts[i % n]}
            for i in range(first, first + self.per_request)
        ]
        return json.dumps({"events": events})

    def send(self, local: threading.local, body: str) -> None:
        """One POST on this thread's keep-alive connection. A connection the server closed while it was
        idle (uvicorn's keep-alive timeout) is reopened and the request sent again, as HTTP clients do
        (safe: the ids make it idempotent); any other failure is counted as a connection error."""
        for attempt in (1, 2):
            reused = getattr(local, "conn", None) is not None
            if not reused:
                local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                local.conn.request("POST", "/v1/events", body, {"content-type": "application/json"})
                response = local.conn.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                local.conn.close()
                local.conn = None
                stale = reused and attempt == 1 and isinstance(exc, STALE_CONNECTION)
                with self.lock:
                    self.statuses["reconnects" if stale else f"conn:{type(exc).__name__}"] += 1
                if not stale:
                    return
        ids = json.loads(payload)["ids"] if response.status == 202 else []
        with self.lock:
            self.statuses[str(response.status)] += 1
            self.accepted.extend(ids)
        if response.status != 202:
            print(f"POST answered {response.status}: {payload[:300]!r}", file=sys.stderr)

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            return len(self.accepted), dict(self.statuses)


def run_clients(clients: int, loop: Callable[[threading.local], None]) -> None:
    threads = [threading.Thread(target=loop, args=(threading.local(),), daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def paced(load: Load, rate: float, seconds: float, clients: int) -> None:
    """Request k is due at start + k * per_request / rate (a token bucket of depth 1); clients take due
    times in turn, sleep until theirs and record how late they sent."""
    interval = load.per_request / rate
    start = time.monotonic()
    end = start + seconds
    slot = iter(range(10**12))
    slot_lock = threading.Lock()

    def loop(local: threading.local) -> None:
        while True:
            with slot_lock:
                due = start + next(slot) * interval
            if due >= end:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            late = time.monotonic() - due
            body = load.body("s")
            load.send(local, body)
            with load.lock:
                load.lateness.append(late)

    run_clients(clients, loop)


class Probe:
    """GET /v1/stats and the server's RSS (its children included)."""

    def __init__(self, server: Server) -> None:
        self.base = server.base
        self.proc = psutil.Process(server.proc.pid)
        self.client = httpx.Client(timeout=10)
        self.errors = 0

    def tickets(self) -> dict[str, int] | None:
        try:
            return dict(self.client.get(f"{self.base}/v1/stats").json()["events"].get("ticket", {}))
        except (httpx.HTTPError, ValueError, KeyError):
            self.errors += 1
            return None

    def rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child may exit in between
                total += p.memory_info().rss
        return total


def calibrate(load: Load, probe: Probe, seconds: float, clients: int, backlog: int) -> float:
    """Post as fast as the server drains (at most `backlog` events waiting); done/s after a warm-up."""
    done = [0]
    stop = threading.Event()
    marks: list[tuple[float, int]] = []

    def poll() -> None:
        while not stop.is_set():
            t = probe.tickets()
            if t is not None:
                done[0] = t.get("done", 0) + t.get("failed", 0)
                marks.append((time.monotonic(), done[0]))
            stop.wait(1.0)

    end = time.monotonic() + seconds
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def loop(local: threading.local) -> None:
        while time.monotonic() < end:
            if load.snapshot()[0] - done[0] >= backlog:
                time.sleep(0.05)
                continue
            load.send(local, load.body("c"))

    run_clients(clients, loop)
    stop.set()
    poller.join()
    warm = marks[0][0] + min(10.0, seconds / 3)
    window = [m for m in marks if m[0] >= warm]
    if len(window) < 2 or window[-1][1] == window[0][1]:
        raise SystemExit(f"calibration measured no progress: {marks}")
    return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])


def drain(load: Load, probe: Probe, timeout_s: float) -> bool:
    """Wait until every accepted event is done or failed; False when the wait runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        t = probe.tickets()
        if t is not None and t.get("done", 0) + t.get("failed", 0) >= load.snapshot()[0]:
            return True
        time.sleep(1.0)
    return False


class Sampler(threading.Thread):
    """Every `every` seconds of the steady phase: counts, statuses, lag and RSS."""

    def __init__(self, load: Load, probe: Probe, every: float) -> None:
        super().__init__(daemon=True)
        self.load, self.probe, self.every = load, probe, every
        self.stop = threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.start_t = time.monotonic()

    def sample(self) -> None:
        accepted, statuses = self.load.snapshot()
        t = self.probe.tickets() or {}
        done, failed = t.get("done", 0), t.get("failed", 0)
        row = {"t": round(time.monotonic() - self.start_t, 1), "accepted": accepted, "done": done, "failed": failed}
        row.update(lag=accepted - done - failed, rss_mib=round(self.probe.rss() / 2**20, 1), statuses=statuses)
        self.samples.append(row)
        print(f"  t={row['t']:>6.0f}s accepted {accepted:>7} done {done:>7} lag {row['lag']:>6}"
              f" rss {row['rss_mib']:>7.1f} MiB statuses {statuses}", flush=True)  # fmt: skip

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(self.every - (time.monotonic() - self.start_t) % self.every):
            self.sample()


def verify(server: Server, accepted: list[str]) -> dict[str, Any]:
    """After the server stopped: every accepted id's row and status, received->done lag, points."""
    from services.db.models import Event as E  # typed columns: SQLite timestamps parsed

    engine = sa.create_engine(server.db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(E.id, E.status, E.point_id, E.received_at, E.processed_at)).all()
    engine.dispose()
    by_id = {r.id: r for r in rows}
    wanted = set(accepted)
    status = Counter(by_id[i].status if i in by_id else "missing" for i in wanted)
    lags = sorted(
        (r.processed_at - r.received_at).total_seconds()
        for r in rows
        if r.status == "done" and r.id.startswith("s") and r.processed_at is not None
    )
    from services.vectors import open_store

    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=server.dir / "qdrant")
    points = store.count(COLLECTION)
    done_points = [r.point_id for r in rows if r.status == "done"]
    found = sum(len(store.retrieve(COLLECTION, done_points[i : i + 500])) for i in range(0, len(done_points), 500))
    store.close()
    log = (server.dir / "up.log").read_text(errors="replace").splitlines()
    errors = [n for n, line in enumerate(log) if "ERROR" in line or "Traceback" in line]
    return {
        "server_log_errors": len(errors),
        # each error line with the 5 lines after it, so a report says what went wrong
        "server_log_error_excerpts": ["\n".join(log[n : n + 6])[:2000] for n in errors[:5]],
        "rows": len(rows),
        "done_rows": sum(r.status == "done" for r in rows),
        "points": points,
        "accepted": len(accepted),
        "accepted_unique": len(wanted),
        "accepted_done": status["done"],
        "accepted_failed": status["failed"],
        "lost": len(wanted) - status["done"] - status["failed"],
        "unacknowledged_rows": len(set(by_id) - wanted),  # committed, but the client saw no 202
        "done_without_point": len(done_points) - found,
        "duplicates": (len(accepted) - len(wanted)) + max(0, points - found),
        "lag_s": {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": pct(lags, 100), "n": len(lags)},
    }


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))], 3)


def rss_growth(samples: list[dict[str, Any]], steady_s: float, baseline_s: float) -> dict[str, Any]:
    """RSS at minute 2 (half the run if it is shorter) against the last sample of the steady phase."""
    at = min(baseline_s, steady_s / 2)
    base = next((s for s in samples if s["t"] >= at), samples[0])
    last = [s for s in samples if s["t"] <= steady_s + 1][-1]
    growth = 100.0 * (last["rss_mib"] - base["rss_mib"]) / base["rss_mib"]
    peak = max(s["rss_mib"] for s in samples)
    return {"base_t": base["t"], "base_mib": base["rss_mib"], "end_t": last["t"], "end_mib": last["rss_mib"],
            "growth_pct": round(growth, 2), "peak_mib": peak}  # fmt: skip


def steady_report(load: Load, samples: list[dict[str, Any]], rate: float, steady_s: float) -> dict[str, Any]:
    """Throughput and pacing of the steady phase, from the samples and the clients' lateness."""
    first, last = samples[0], [s for s in samples if s["t"] <= steady_s + 1][-1]
    span = max(1e-9, last["t"] - first["t"])
    late = sorted(load.lateness)
    return {
        "target_events_per_s": round(rate, 2),
        "posted_events_per_s": round(len(late) * load.per_request / steady_s, 2),
        "done_events_per_s": round((last["done"] + last["failed"] - first["done"] - first["failed"]) / span, 2),
        # the steady phase's events over the time until the last of them was done (the final sample)
        "done_events_per_s_to_drained": round(
            (samples[-1]["done"] + samples[-1]["failed"] - first["done"] - first["failed"]) / samples[-1]["t"], 2
        ),
        "queue_lag_max": max(s["lag"] for s in samples),
        "client_late_s": {"p50": pct(late, 50), "p99": pct(late, 99), "max": pct(late, 100)},
        "requests_late_over_1s": sum(x > 1.0 for x in late),
    }


def bars(result: dict[str, Any], rss_bound: float) -> list[str]:
    v, statuses = result["verify"], result["statuses"]
    server_errors = sum(n for s, n in statuses.items() if s.startswith(("5", "conn")))
    failing = []
    if v["lost"] > 0:
        failing.append(f"lost events: {v['lost']}")
    if server_errors > 0:
        failing.append(f"5xx / connection errors: {server_errors}")
    if result["rss"]["growth_pct"] >= rss_bound:
        failing.append(f"RSS growth {result['rss']['growth_pct']}% >= {rss_bound}%")
    if v["done_without_point"] > 0:
        failing.append(f"done events without a point: {v['done_without_point']}")
    if v["duplicates"] > 0:
        failing.append(f"duplicates: {v['duplicates']}")
    return failing


def print_summary(result: dict[str, Any], failing: list[str]) -> None:
    v, s, r = result["verify"], result["steady"], result["rss"]
    errors = sum(n for k, n in result["statuses"].items() if k not in ("202", "reconnects"))
    calibrated = result["calibrated_events_per_s"]
    lines = [
        ("mode", result["mode"]),
        ("steady rate (target / posted)", f"{s['target_events_per_s']} / {s['posted_events_per_s']} events/s"
         + (f" (80% of {calibrated:.1f} done/s calibrated)" if calibrated else "")),
        ("throughput (done: steady phase / to drained)",
         f"{s['done_events_per_s']} / {s['done_events_per_s_to_drained']} events/s"),
        ("queue lag (accepted - done) max", s["queue_lag_max"]),
        ("received->done lag p50 / p99 / max", f"{v['lag_s']['p50']} / {v['lag_s']['p99']} / {v['lag_s']['max']} s"),
        ("client lateness p99 / max", f"{s['client_late_s']['p99']} / {s['client_late_s']['max']} s"
         + (" (the producer fell behind)" if s["requests_late_over_1s"] else "")),
        ("RSS", f"{r['base_mib']} MiB at {r['base_t']:.0f}s -> {r['end_mib']} MiB at {r['end_t']:.0f}s"
         f" ({r['growth_pct']:+.2f}%), peak {r['peak_mib']} MiB"),
        ("HTTP statuses", json.dumps(result["statuses"])),
        ("errors (non-202)", errors),
        ("accepted / done / failed / lost", f"{v['accepted_unique']} / {v['accepted_done']} / {v['accepted_failed']}"
         f" / {v['lost']}"),
        ("rows / done rows / points", f"{v['rows']} / {v['done_rows']} / {v['points']}"),
        ("duplicates / done without point", f"{v['duplicates']} / {v['done_without_point']}"),
        ("server log ERROR / Traceback lines", v["server_log_errors"]),
        ("bars", "PASS" if not failing else "FAIL: " + "; ".join(failing)),
    ]  # fmt: skip
    width = max(len(k) for k, _ in lines)
    for k, val in lines:
        print(f"{k:<{width}}  {val}")


def soak(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    server = Server(args.mode, dict(item.split("=", 1) for item in args.env))
    try:
        load, probe = Load(server.base, texts, args.per_request), Probe(server)
        calibrated = None
        rate = args.rate
        if rate is None:
            calibrated = calibrate(load, probe, args.calibrate_s, args.clients, args.backlog)
            rate = 0.8 * calibrated
            print(
                f"calibration: {calibrated:.1f} done/s over {args.calibrate_s:.0f}s -> steady rate {rate:.1f} events/s"
            )
            if not drain(load, probe, args.drain_timeout):
                raise SystemExit("the calibration events did not drain")
        steady_s = args.minutes * 60
        shape = f"{args.per_request} events a request, {args.clients} clients"
        print(f"steady: {rate:.1f} events/s for {steady_s:.0f}s, {shape}")
        sampler = Sampler(load, probe, args.sample_s)
        sampler.start()
        paced(load, rate, steady_s, args.clients)
        drained = drain(load, probe, args.drain_timeout)
        sampler.stop.set()
        sampler.join()
        sampler.sample()  # after the drain
        server.halt()
        return {
            "mode": args.mode,
            "minutes": args.minutes,
            "per_request": args.per_request,
            "clients": args.clients,
            "calibrated_events_per_s": calibrated,
            "drained": drained,
            "stats_errors": probe.errors,
            "statuses": load.snapshot()[1],
            "steady": steady_report(load, sampler.samples, rate, steady_s),
            "rss": rss_growth(sampler.samples, steady_s, args.rss_baseline_s),
            "verify": verify(server, load.accepted),
            "samples": sampler.samples,
        }
    finally:
        if server.proc.poll() is None:
            server.halt()
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="CSV with a 'text' column (e.g. ../shared/data/banking77/train.csv)")
    parser.add_argument("--mode", choices=["embedded", "redis-pg"], default="embedded")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady phase")
    parser.add_argument("--rate", type=float, default=None, help="events/s; default 80%% of the calibrated capacity")
    parser.add_argument("--per-request", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4, help="keep-alive HTTP clients")
    parser.add_argument("--calibrate-s", type=float, default=30.0)
    parser.add_argument("--backlog", type=int, default=1000, help="calibration: most events waiting at once")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--rss-baseline-s", type=float, default=120.0, help="the RSS growth is measured from here")
    parser.add_argument("--rss-bound", type=float, default=10.0, help="RSS growth bar, %%")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--env", action="append", default=[], help="extra SIFT_X=value for the server")
    args = parser.parse_args()
    texts = load_texts(args.dataset, None)
    result = soak(args, texts)
    failing = bars(result, args.rss_bound)
    if not result["drained"]:
        failing.append(f"not drained within {args.drain_timeout:.0f}s")
    print_summary(result, failing)
    print(json.dumps({**result, "bars_failed": failing}))
    raise SystemExit(1 if failing else 0)


if __name__ == "__main__":
    main()
