"""The cost curve: how feed, similar-items and ingest costs, memory and disk grow with the catalogue.

    python bench/scale.py --sizes 10000,100000 [--users 2000] [--requests 300] [--ingest 1000]
                          --cache DIR [--out docs/scale.png] [--json FILE] [--replot FILE] [--merge FILE]

One run of bench/recommend.py per size, with --scale (each in its own process, one after the
other): the same templated catalogue and users as that bench (2,000 users with 15-45 interactions),
the vectors REAL all-MiniLM-L6-v2 embeddings made by Sift's own pipeline (int8 encoder) when the
catalogue is first built, kept on disk in --cache (the whole built data dir, per size: a later
run copies it back instead of encoding again; `bench/recommend.py --help` says what the key
covers). Per size, against an embedded `sift up` over a real socket: feed latency one request at
a time and from 8 clients, similar items the same two ways, the server's CPU per request, its
resident memory (VmRSS, VmHWM) and the data dir's size on disk (allocated blocks), then the ingest
rate with the catalogue stored (--ingest new product events as 100-event requests from 2 clients,
until all are done).
Every feed answer is checked (no seen item, filters hold, 10 items). Prints a table (markdown)
and writes the curves as a PNG (matplotlib). With --cache, a build encodes the catalogue's distinct
passages first, with the same encoder in calls of 20,000 (kept as .npy in CACHE/vectors, shared by
the sizes: a smaller catalogue is a prefix of a larger one), while the pipeline takes every item
through its own code as their vectors come in (bench/catalogue_vectors.py), the encoder's calls its
whole cost but the HNSW index's (1,000,000 passages at 430 texts/s: 40 min of 2 quiet cores; the
index 1.5-3 s per 1,000 points). Build a size apart (under nice) with
`bench/recommend.py --items N --users 2000 --history 30 --cache DIR --vectors DIR/vectors --build-only`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

ROWS = (
    ("feed, 1 at a time", "feed_seq"),
    ("feed, 8 clients", "feed_conc8"),
    ("similar, 1 at a time", "similar"),
    ("similar, 8 clients", "similar_conc8"),
)


def run_size(items: int, args: argparse.Namespace) -> dict[str, Any]:
    """bench/recommend.py --scale at one size; its last line (JSON)."""
    command = [
        sys.executable, str(ROOT / "bench" / "recommend.py"), "--items", str(items), "--users", str(args.users),
        "--history", "30", "--requests", str(args.requests), "--cache", str(args.cache), "--scale", str(args.ingest),
        "--vectors", str(args.cache / "vectors"),
    ]  # fmt: skip
    print(f"# {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = proc.stdout.splitlines()
    for line in lines[:-1]:
        if not line.startswith("#   items") and not line.startswith("#   interactions"):
            print(f"  {line}", flush=True)
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"bench/recommend.py failed at {items} items:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The curve's points at one size."""
    socket = result["socket"]
    scale = socket["scale"]
    latency = {
        "feed_seq": socket["feed_seq"]["all"],
        "feed_conc8": socket["feed_conc8"]["all"],
        "similar": socket["similar"],
        "similar_conc8": scale["similar_conc8"],
    }
    counts = result["checks"]["counts"]
    return {
        "items": result["items"],
        "latency": {k: {m: v.get(m) for m in ("p50_ms", "p99_ms", "req_per_s")} for k, v in latency.items()},
        "cpu_ms_per_request": socket.get("server_cpu_ms_per_request"),
        "rss_mib": scale["rss_mib"],
        "peak_rss_mib": scale["peak_rss_mib"],
        "disk_mib": scale["disk_mib"],
        "ingest": scale["ingest"],
        "checks": {"feeds": counts.get("feeds", 0), "problems": sum(v for k, v in counts.items() if k != "feeds")},
    }


def table(points: list[dict[str, Any]]) -> str:
    sizes = [f"{p['items']:,}" for p in points]
    lines = ["| items | " + " | ".join(sizes) + " |", "|---" * (len(points) + 1) + "|"]
    for name, key in ROWS:
        cells = [
            f"{p['latency'][key]['p50_ms']:.1f} / {p['latency'][key]['p99_ms']:.1f} ms"
            + (f", {p['latency'][key]['req_per_s']:.0f}/s" if "conc8" in key else "")
            for p in points
        ]
        lines.append(f"| {name} p50 / p99 | " + " | ".join(cells) + " |")
    cpu = [f"{(p['cpu_ms_per_request'] or {}).get('feed_seq', float('nan')):.1f} ms" for p in points]
    lines.append("| server CPU per feed | " + " | ".join(cpu) + " |")
    lines.append(
        "| ingest with it stored | " + " | ".join(f"{p['ingest']['events_per_s']:.0f} events/s" for p in points) + " |"
    )
    lines.append("| RSS (peak) | " + " | ".join(f"{p['rss_mib']:,} ({p['peak_rss_mib']:,}) MiB" for p in points) + " |")
    lines.append("| data dir | " + " | ".join(f"{p['disk_mib']:,.0f} MiB" for p in points) + " |")
    lines.append(
        "| feeds checked / problems | "
        + " | ".join(f"{p['checks']['feeds']} / {p['checks']['problems']}" for p in points)
        + " |"
    )
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [p["items"] for p in points]
    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, key), colour in zip(ROWS, ("C0", "C1", "C2", "C3"), strict=True):
        for pct, style in (("p50_ms", "-o"), ("p99_ms", "--o")):
            values = [p["latency"][key][pct] for p in points]
            lat.plot(items, values, style, color=colour, label=f"{name} {pct[:3]}")
    lat.set(xscale="log", yscale="log", xlabel="items", ylabel="ms", title="latency over a socket (embedded sift up)")
    lat.legend(fontsize=6)
    mem.plot(items, [p["rss_mib"] for p in points], "-o", label="RSS MiB")
    mem.plot(items, [p["disk_mib"] for p in points], "-o", label="data dir MiB")
    mem.plot(items, [p["ingest"]["events_per_s"] for p in points], "-o", label="ingest events/s")
    mem.set(xscale="log", xlabel="items", title="memory, disk, ingest rate")
    mem.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="catalogue sizes, comma-separated")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=300, help="feed requests per latency line")
    parser.add_argument("--ingest", type=int, default=1000, help="new events ingested with the catalogue stored")
    parser.add_argument("--cache", type=Path, help="the built data dirs and vectors, per size (needed to run)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scale.png")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--replot", type=Path, help="no run: the table and curves of a --json file")
    parser.add_argument("--merge", type=Path, help="also the sizes of an earlier --json file that this run has not")
    args = parser.parse_args()
    if args.replot is None and args.cache is None:
        parser.error("--cache DIR is needed to run (or --replot FILE)")
    if args.replot is not None:
        points = json.loads(args.replot.read_text())
    else:
        points = [figures(run_size(int(n), args)) for n in sorted(int(s) for s in args.sizes.split(","))]
    if args.merge is not None:
        measured = {p["items"] for p in points}
        points += [p for p in json.loads(args.merge.read_text()) if p["items"] not in measured]
        points.sort(key=lambda p: p["items"])
    print(table(points), flush=True)
    plot(points, args.out)
    print(f"# curves: {args.out}", flush=True)
    if args.json and args.replot is None:
        args.json.write_text(json.dumps(points, indent=1))
    print(json.dumps({"bench": "scale", "points": points}))


if __name__ == "__main__":
    main()
