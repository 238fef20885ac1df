"""Soak: a bounded, steady load on a fresh Sift on loopback; are events lost, errors, memory growth?

    python bench/soak.py ../shared/data/banking77/train.csv [--minutes 10] [--rate R] [--per-request 10]
        [--clients 4] [--id-space N] [--mode embedded|redis-pg] [--env SIFT_X=value ...]

1. a fresh `sift up` (bench/ingest.py's Server: a temp data dir; redis-pg: a fresh PostgreSQL database
   and Redis db 14 on 127.0.0.1, the vectors embedded in both modes, so API and worker share one process);
2. calibration (unless --rate): --calibrate-s of posting as fast as the server drains (at most
   --backlog events waiting), measuring done/s after a warm-up; the steady rate is 80% of it. Its events
   are drained before the steady phase;
3. steady phase: --minutes at the rate, --per-request events a request from --clients keep-alive
   http.client connections on a fixed schedule (request k is due at k x per_request / rate; a client
   that is late sends at once and the lateness is reported); texts cycled from the CSV with unique ids,
   or, with --id-space N, ids cycled over N distinct ids, each re-send with a changed text (a text
   with a round number appended), so that it is stored and processed again: once the N ids exist,
   the server holds a constant amount of data and any memory growth is not the data's;
4. every --sample-s: accepted, events processed (the server's sift_events_processed_total and
   sift_events_failed_total, GET /metrics), queue lag (queued + processing, GET /v1/stats), HTTP
   statuses, and the server's resident memory split as the kernel counts it (/proc/<pid>/status):
   anonymous (heap, malloc arenas, thread stacks, the engine's own allocations: only the process
   frees it) and file-backed (mapped files: libraries, the vector store's mmapped segments and WAL:
   page cache the kernel can drop under memory pressure and read back), with /proc/<pid>/smaps
   grouped by mapping (heap, other anonymous, the store's vectors, payloads, WAL, SQLite, libraries);
5. a bounded wait until every accepted event is done or failed, the server is stopped, and the rows,
   their statuses and the Qdrant points are checked against the accepted ids.
Minutes are counted from the start of the steady phase. Received->done lag comes from the rows'
received_at (enqueued_at with --id-space: the last re-send's) and processed_at (steady-phase events).
Prints the samples, a summary and a JSON line.
Exit 1 when a bar fails: lost events (accepted, not done or failed; with --id-space also a re-sent
text recorded done without being processed: claimed before the re-send, never claimed after it), 5xx
or connection errors, RSS growth between minute 2 (or half the run, if shorter) and the end of the
steady phase >= --rss-bound %, done events without their point, or duplicates (points beyond the done
rows; without --id-space also an id accepted twice).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
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

from ingest import Server, load_texts, proc_status_kib  # bench/ is not a package: its directory is on sys.path

COLLECTION = "sift_ticket"
STALE_CONNECTION = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


class Load:
    """The producer: events numbered per phase, texts cycled, everything it saw counted."""

    def __init__(self, server: Server, texts: list[str], per_request: int, id_space: int = 0) -> None:
        self.host, port = server.base.removeprefix("http://").split(":")
        self.port = int(port)
        self.headers = {"content-type": "application/json", **server.headers}
        self.texts, self.per_request, self.id_space = texts, per_request, id_space
        self.lock = threading.Lock()
        self.next_event = 0
        self.accepted: list[str] = []
        self.statuses: Counter[str] = Counter()
        self.lateness: list[float] = []

    def body(self, phase: str) -> str:
        with self.lock:
            first, self.next_event = self.next_event, self.next_event + self.per_request
        return json.dumps({"events": [self.event(phase, i) for i in range(first, first + self.per_request)]})

    def event(self, phase: str, i: int) -> dict[str, str]:
        """The i-th event of a phase: a new id each time, or (steady phase, --id-space N) the id
        i mod N, its text changed on every round over the N ids so the re-send is processed again."""
        text = self.texts[i % len(self.texts)]
        if phase != "s" or not self.id_space:
            return {"id": f"{phase}{i}", "kind": "ticket", "text": text}
        n = self.id_space
        return {"id": f"{phase}{i % n}", "kind": "ticket", "text": f"{text} (round {i // n})"}

    def send(self, local: threading.local, body: str) -> None:
        """One POST on this thread's keep-alive connection. A connection the server closed while it was
        idle (uvicorn's keep-alive timeout) is reopened and the request sent again, as HTTP clients do
        (safe: the ids make it idempotent); any other failure is counted as a connection error."""
        for attempt in (1, 2):
            reused = getattr(local, "conn", None) is not None
            if not reused:
                local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                local.conn.request("POST", "/v1/events", body, self.headers)
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

    def unique_accepted(self) -> int:
        with self.lock:
            return len(set(self.accepted)) if self.id_space else len(self.accepted)


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


MEMORY_FIELDS = {"rss": "VmRSS", "anon": "RssAnon", "file": "RssFile", "shmem": "RssShmem"}
PROCESSED = re.compile(r'^sift_events_(processed|failed)_total\{kind="ticket"\} ([0-9.e+]+)$', re.MULTILINE)


def proc_memory(pid: int) -> dict[str, int]:
    """A process's resident memory in bytes: the total, anonymous, file-backed, shared memory."""
    return {name: kib * 1024 for name, kib in proc_status_kib(pid, MEMORY_FIELDS).items()}


def mapping_group(path: str, data_dir: str) -> str:
    """Which group a mapping of /proc/<pid>/smaps counts in (by its path)."""
    if not path:
        return "anon: other (mmapped arenas, thread stacks, native heaps)"
    if path == "[heap]":
        return "anon: [heap] (brk: the main malloc arena)"
    if path.startswith("["):
        return f"anon: {path}"
    if path.startswith(data_dir + "/"):
        parts = path[len(data_dir) + 1 :].split("/")
        if parts[0] == "qdrant" and len(parts) > 2 and parts[2] == "wal":
            return "file: qdrant WAL"
        if parts[0] == "qdrant" and len(parts) > 4 and parts[2] == "segments":
            return f"file: qdrant segments, {parts[4]}"
        if parts[0].startswith("sift.db"):
            return "file: SQLite"
        return f"file: data dir, {parts[0]}"
    if ".so" in path.rsplit("/", 1)[-1]:
        return "file: shared libraries"
    return "file: other"


def smaps_groups(pid: int, data_dir: str) -> dict[str, int]:
    """Resident bytes of a process's mappings, by mapping_group."""
    groups: Counter[str] = Counter()
    group = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line: range perms offset dev inode [path]
            group = mapping_group(head[5].strip() if len(head) > 5 else "", data_dir)
        elif head[0] == "Rss:":
            groups[group] += int(head[1]) * 1024
    return dict(groups)


class Probe:
    """GET /v1/stats and /metrics, and the server's resident memory (its children included)."""

    def __init__(self, server: Server) -> None:
        self.base = server.base
        self.data_dir = str(server.dir)
        self.proc = psutil.Process(server.proc.pid)
        self.client = httpx.Client(headers=server.headers, timeout=10)
        self.errors = 0

    def tickets(self) -> dict[str, int] | None:
        try:
            response = self.client.get(f"{self.base}/v1/stats")
            response.raise_for_status()
            return dict(response.json()["events"].get("ticket", {}))
        except (httpx.HTTPError, ValueError, KeyError):
            self.errors += 1
            return None

    def processed(self) -> int | None:
        """Events the server's worker finished (done or failed) since it started: each processing of
        a re-sent event counts again (the rows' done count does not grow then)."""
        try:
            response = self.client.get(f"{self.base}/metrics")
            response.raise_for_status()
        except httpx.HTTPError:
            self.errors += 1
            return None
        return sum(int(float(value)) for _, value in PROCESSED.findall(response.text))

    def memory(self) -> dict[str, int]:
        """Resident bytes (see MEMORY_FIELDS) of the server process and its children."""
        total: Counter[str] = Counter()
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error, OSError):  # a child may exit in between
                total.update(proc_memory(p.pid))
        return {name: total[name] for name in MEMORY_FIELDS}

    def mappings(self) -> dict[str, int]:
        """The server process's resident bytes by mapping group (empty if it cannot be read)."""
        try:
            return smaps_groups(self.proc.pid, self.data_dir)
        except OSError:
            return {}


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
    """Wait until every accepted event is done or failed (none queued or processing, and as many
    done or failed rows as distinct ids accepted); False when the wait runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        t = probe.tickets()
        if t is not None and not waiting(t) and t.get("done", 0) + t.get("failed", 0) >= load.unique_accepted():
            return True
        time.sleep(1.0)
    return False


def waiting(tickets: dict[str, int]) -> int:
    """Events queued or being processed."""
    return tickets.get("queued", 0) + tickets.get("processing", 0)


class Sampler(threading.Thread):
    """Every `every` seconds of the steady phase: counts, statuses, queue lag and memory."""

    def __init__(self, load: Load, probe: Probe, every: float) -> None:
        super().__init__(daemon=True)
        self.load, self.probe, self.every = load, probe, every
        self.stop = threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.mappings: list[dict[str, int]] = []  # one per sample, kept out of the JSON samples
        self.start_t = time.monotonic()
        self.processed_0: int | None = None

    def sample(self) -> None:
        accepted, statuses = self.load.snapshot()
        t = self.probe.tickets() or {}
        processed = self.probe.processed()
        if processed is not None and self.processed_0 is None:
            self.processed_0 = processed  # the calibration's events
        memory = self.probe.memory()
        row: dict[str, Any] = {"t": round(time.monotonic() - self.start_t, 1), "accepted": accepted}
        row.update(
            processed=None if processed is None else processed - (self.processed_0 or 0),
            done=t.get("done", 0),
            failed=t.get("failed", 0),
            lag=waiting(t),
            **{f"{name}_mib": round(value / 2**20, 1) for name, value in memory.items()},
            statuses=statuses,
        )
        self.samples.append(row)
        self.mappings.append(self.probe.mappings())
        print(f"  t={row['t']:>6.0f}s accepted {accepted:>7} processed {row['processed'] or 0:>7} lag {row['lag']:>6}"
              f" rss {row['rss_mib']:>7.1f} MiB (anon {row['anon_mib']:>7.1f}, file {row['file_mib']:>6.1f})"
              f" statuses {statuses}", flush=True)  # fmt: skip

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(self.every - (time.monotonic() - self.start_t) % self.every):
            self.sample()


def verify(server: Server, accepted: list[str], id_space: int) -> dict[str, Any]:
    """After the server stopped: every accepted id's row and status, received->done lag, points."""
    from services.db.models import Event as E  # typed columns: SQLite timestamps parsed

    engine = sa.create_engine(server.db_url)
    with engine.connect() as conn:
        columns = (E.id, E.status, E.point_id, E.received_at, E.enqueued_at, E.claimed_at, E.processed_at)
        rows = conn.execute(sa.select(*columns)).all()
    engine.dispose()
    by_id = {r.id: r for r in rows}
    wanted = set(accepted)
    status = Counter(by_id[i].status if i in by_id else "missing" for i in wanted)
    lags = sorted(
        (r.processed_at - (r.enqueued_at if id_space else r.received_at)).total_seconds()
        for r in rows
        if r.status == "done" and r.id.startswith("s") and r.processed_at is not None
    )
    # done, but its last text arrived after the batch that recorded it had claimed it, and no batch
    # claimed it again: the row says done while its point holds the text before
    stale = [r.id for r in rows if r.status == "done" and r.claimed_at is not None and r.enqueued_at > r.claimed_at]
    from services.vectors import open_store

    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=server.dir / "qdrant")
    points = store.count(COLLECTION)
    done_points = [r.point_id for r in rows if r.status == "done"]
    found = sum(len(store.retrieve(COLLECTION, done_points[i : i + 500])) for i in range(0, len(done_points), 500))
    store.close()
    log = (server.dir / "up.log").read_text(errors="replace").splitlines()
    errors = [n for n, line in enumerate(log) if "ERROR" in line or "Traceback" in line]
    excerpts, covered = [], 0
    for n in errors:
        if n >= covered and len(excerpts) < 5:  # a traceback inside an entry already kept is not a new one
            covered = entry_end(log, n)
            excerpts.append(log_entry(log[n:covered]))
    resent = len(accepted) - len(wanted)
    return {
        "server_log_errors": len(errors),
        "server_log_error_excerpts": excerpts,
        "rows": len(rows),
        "done_rows": sum(r.status == "done" for r in rows),
        "points": points,
        "accepted": len(accepted),
        "accepted_unique": len(wanted),
        "accepted_resent": resent if id_space else 0,
        "accepted_done": status["done"],
        "accepted_failed": status["failed"],
        "lost": len(wanted) - status["done"] - status["failed"],
        "stale_done": len(stale),
        "stale_examples": stale[:5],
        "unacknowledged_rows": len(set(by_id) - wanted),  # committed, but the client saw no 202
        "done_without_point": len(done_points) - found,
        "duplicates": (0 if id_space else resent) + max(0, points - found),
        "lag_s": {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": pct(lags, 100), "n": len(lags)},
    }


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def entry_end(log: list[str], n: int) -> int:
    """Where the log entry that starts at line n ends: the next timestamped line (at most 400 on)."""
    last = min(len(log), n + 400)
    return next((m for m in range(n + 1, last) if LOG_LINE.match(log[m])), last)


def log_entry(lines: list[str]) -> str:
    """A log entry, a long traceback cut to its first 2 and last 8 lines (where the exception is),
    so a report says what went wrong."""
    if len(lines) > 12:
        lines = [*lines[:2], f"  ... ({len(lines) - 10} lines)", *lines[-8:]]
    return "\n".join(lines)[:3000]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))], 3)


def memory_growth(
    samples: list[dict[str, Any]], mappings: list[dict[str, int]], steady_s: float, baseline_s: float
) -> dict[str, Any]:
    """Resident memory at minute 2 (half the run if it is shorter) against the last sample of the
    steady phase: the total (the bar), anonymous and file-backed, each also per 1,000 events processed
    in between, and the mapping groups that changed most."""
    at = min(baseline_s, steady_s / 2)
    b = next((n for n, s in enumerate(samples) if s["t"] >= at), 0)
    e = max(n for n, s in enumerate(samples) if s["t"] <= steady_s + 1)
    base, last = samples[b], samples[e]
    events = (last["processed"] or 0) - (base["processed"] or 0)
    out: dict[str, Any] = {"base_t": base["t"], "end_t": last["t"], "events_between": events}
    for kind in ("rss", "anon", "file"):
        before, after = base[f"{kind}_mib"], last[f"{kind}_mib"]
        out[kind] = {
            "base_mib": before,
            "end_mib": after,
            "growth_pct": round(100.0 * (after - before) / before, 2) if before else None,
            "mib_per_1000_events": round(1000 * (after - before) / events, 3) if events > 0 else None,
        }
    out["growth_pct"] = out["rss"]["growth_pct"]
    out["peak_mib"] = max(s["rss_mib"] for s in samples)
    groups = sorted(
        set(mappings[b]) | set(mappings[e]), key=lambda g: -abs(mappings[e].get(g, 0) - mappings[b].get(g, 0))
    )
    out["by_mapping"] = [
        {
            "group": g,
            "base_mib": round(mappings[b].get(g, 0) / 2**20, 1),
            "end_mib": round(mappings[e].get(g, 0) / 2**20, 1),
            "delta_mib": round((mappings[e].get(g, 0) - mappings[b].get(g, 0)) / 2**20, 1),
        }
        for g in groups
    ]
    return out


def steady_report(load: Load, samples: list[dict[str, Any]], rate: float, steady_s: float) -> dict[str, Any]:
    """Throughput and pacing of the steady phase, from the samples and the clients' lateness."""
    first, last = samples[0], [s for s in samples if s["t"] <= steady_s + 1][-1]
    span = max(1e-9, last["t"] - first["t"])
    late = sorted(load.lateness)
    return {
        "target_events_per_s": round(rate, 2),
        "posted_events_per_s": round(len(late) * load.per_request / steady_s, 2),
        "processed_events_per_s": round(((last["processed"] or 0) - (first["processed"] or 0)) / span, 2),
        # the steady phase's events over the time until the last of them was processed (the final sample)
        "processed_events_per_s_to_drained": round(
            ((samples[-1]["processed"] or 0) - (first["processed"] or 0)) / samples[-1]["t"], 2
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
    if v["stale_done"] > 0:
        failing.append(f"re-sent texts recorded done without being processed: {v['stale_done']}")
    if server_errors > 0:
        failing.append(f"5xx / connection errors: {server_errors}")
    if result["rss"]["growth_pct"] >= rss_bound:
        failing.append(f"RSS growth {result['rss']['growth_pct']}% >= {rss_bound}%")
    if v["done_without_point"] > 0:
        failing.append(f"done events without a point: {v['done_without_point']}")
    if v["duplicates"] > 0:
        failing.append(f"duplicates: {v['duplicates']}")
    return failing


def memory_line(m: dict[str, Any]) -> str:
    per = "" if m["mib_per_1000_events"] is None else f", {m['mib_per_1000_events']:+.2f} MiB per 1,000 events"
    growth = "n/a" if m["growth_pct"] is None else f"{m['growth_pct']:+.2f}%"
    return f"{m['base_mib']} -> {m['end_mib']} MiB ({growth}{per})"


def print_summary(result: dict[str, Any], failing: list[str]) -> None:
    v, s, r = result["verify"], result["steady"], result["rss"]
    errors = sum(n for k, n in result["statuses"].items() if k not in ("202", "reconnects"))
    calibrated = result["calibrated_events_per_s"]
    id_space = result["id_space"]
    changes = ", ".join(f"{g['group']} {g['delta_mib']:+.1f}" for g in r["by_mapping"][:6])
    lines = [
        ("mode", result["mode"] + (f", ids cycled over {id_space:,} (constant data volume)" if id_space else
                                   ", a new id for every event (the data grows)")),
        ("steady rate (target / posted)", f"{s['target_events_per_s']} / {s['posted_events_per_s']} events/s"
         + (f" (80% of {calibrated:.1f} done/s calibrated)" if calibrated else "")),
        ("throughput (processed: steady phase / to drained)",
         f"{s['processed_events_per_s']} / {s['processed_events_per_s_to_drained']} events/s"),
        ("queue lag (queued + processing) max", s["queue_lag_max"]),
        ("received->done lag p50 / p99 / max", f"{v['lag_s']['p50']} / {v['lag_s']['p99']} / {v['lag_s']['max']} s"),
        ("client lateness p99 / max", f"{s['client_late_s']['p99']} / {s['client_late_s']['max']} s"
         + (" (the producer fell behind)" if s["requests_late_over_1s"] else "")),
        (f"RSS, {r['base_t']:.0f}s -> {r['end_t']:.0f}s ({r['events_between']:,} events)",
         f"{memory_line(r['rss'])}, peak {r['peak_mib']} MiB"),
        ("  anonymous (heap, arenas, native)", memory_line(r["anon"])),
        ("  file-backed (mapped files)", memory_line(r["file"])),
        ("  largest changes by mapping, MiB", changes or "(smaps not readable)"),
        ("HTTP statuses", json.dumps(result["statuses"])),
        ("errors (non-202)", errors),
        ("accepted / done / failed / lost", f"{v['accepted_unique']} / {v['accepted_done']} / {v['accepted_failed']}"
         f" / {v['lost']}" + (f" (ids; {v['accepted_resent']} re-sends)" if id_space else "")),
        ("re-sent texts done without processing", v["stale_done"]),
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
        load, probe = Load(server, texts, args.per_request, args.id_space), Probe(server)
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
        if args.id_space:
            fill_s = args.id_space / rate
            baseline = min(args.rss_baseline_s, steady_s / 2)
            print(f"ids cycled over {args.id_space:,}: all exist after ~{fill_s:.0f}s, then each is re-sent every"
                  f" ~{fill_s:.0f}s with a changed text" + ("" if fill_s < baseline else
                  f" (WARNING: later than the memory baseline at {baseline:.0f}s: lower --id-space)"))  # fmt: skip
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
            "id_space": args.id_space,
            "calibrated_events_per_s": calibrated,
            "drained": drained,
            "stats_errors": probe.errors,
            "statuses": load.snapshot()[1],
            "steady": steady_report(load, sampler.samples, rate, steady_s),
            "rss": memory_growth(sampler.samples, sampler.mappings, steady_s, args.rss_baseline_s),
            "verify": verify(server, load.accepted, args.id_space),
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
    parser.add_argument(
        "--id-space",
        type=int,
        default=0,
        help="steady phase: cycle the event ids over N distinct ids, each re-send with a changed text"
        " (constant data volume); 0: a new id for every event",
    )
    parser.add_argument("--calibrate-s", type=float, default=30.0)
    parser.add_argument("--backlog", type=int, default=1000, help="calibration: most events waiting at once")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--rss-baseline-s", type=float, default=120.0, help="the RSS growth is measured from here")
    parser.add_argument("--rss-bound", type=float, default=10.0, help="RSS growth bar, %%")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--env", action="append", default=[], help="extra SIFT_X=value for the server")
    args = parser.parse_args()
    if args.id_space and args.id_space < 10 * args.per_request * args.clients:
        parser.error("--id-space must be at least 10 x --per-request x --clients (an id in two requests at once)")
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
