"""Where a worker's time goes under load: py-spy samples of a `sift up` process while it works
through a backlog, grouped by stage.

    python bench/profile_worker.py ../shared/data/banking77/train.csv [--events 3000] [--seconds 8]
                                   [--mode embedded|redis-pg] [--env SIFT_X=value ...]

A fresh `sift up` (bench/ingest.py's Server) gets --events texts in requests of --per-request
events from --clients clients (100 from 2 unless told); once the first batch is being processed,
`py-spy record --threads --idle` samples the process at 100 Hz for --seconds. The worker runs in
the process's main thread (API and beat are threads beside it); its samples are put in the first
stage, in the order below, whose pattern a stack contains: encoding, pooling and normalisation,
the vector store, SQL, the broker. The helper threads' samples (the int8 encode threads, the torch
path's tokeniser thread, the worker's write stage) are grouped too: forward pass, tokenisation,
pooling, vector store, SQL, idle. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import Server, load_texts, post_all  # noqa: E402

# (stage, patterns): a sample belongs to the first stage with a pattern in its stack.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("encoding, int8 (the worker waits while the encode threads run the batches)", ("_encode_parallel",)),
    ("forward pass (torch)", ("torch/nn/modules/linear", "modeling_bert", "onnxruntime")),
    (
        "pooling and normalisation (the model's modules)",
        ("modules/pooling", "modules/normalize", "models/Pooling", "models/Normalize", "normalize ("),
    ),
    ("waiting for the write thread (the batch before is still being written)", ("_settle",)),
    ("waiting for the tokeniser thread (torch)", ("concurrent/futures/_base.py",)),
    ("vector store (Qdrant Edge upsert)", ("qdrant",)),
    ("SQL (claim, record, links)", ("sqlalchemy", "sqlite3", "psycopg")),
    ("broker and waiting for work (Celery, kombu)", ("kombu", "celery/worker/consumer", "billiard")),
]
# What the encode threads (int8), the tokeniser thread (torch) and the write stage spend their samples on.
HELPER_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("forward pass (ONNX Runtime)", ("onnxruntime",)),
    ("tokenisation", ("preprocess (", "tokeniz")),
    ("pooling and normalisation", ("modules/pooling", "modules/normalize", "normalize (")),
    ("vector store (upsert, flush)", ("qdrant",)),
    ("SQL (record)", ("sqlalchemy", "sqlite3", "psycopg")),
    ("idle", ("_worker (concurrent/futures/thread.py",)),
]
OTHER = "the rest (payloads, heads, task bookkeeping)"


def stage_of(stack: str) -> str:
    return next((name for name, patterns in STAGES if any(p in stack for p in patterns)), OTHER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--mode", choices=["embedded", "redis-pg"], default="embedded")
    parser.add_argument("--env", action="append", default=[], help="extra SIFT_X=value for the server")
    parser.add_argument("--top", type=int, default=0, help="also print each stage's N most sampled innermost frames")
    parser.add_argument("--per-request", type=int, default=100, help="events per request (1: single-event requests)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients posting them")
    args = parser.parse_args()
    texts = load_texts(args.dataset, args.events)
    server = Server(args.mode, dict(item.split("=", 1) for item in args.env))
    try:
        poster = threading.Thread(target=post_all, args=(server, texts, args.per_request, args.clients))
        poster.start()  # still posting while sampled, as single-event requests are
        time.sleep(1.0)  # the first batch is claimed and encoding
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "stacks.txt"
            subprocess.run(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.proc.pid), "--threads",
                 "--idle", "--rate", "100", "--duration", str(args.seconds), "--format", "raw", "--output", str(out),
                 "--nonblocking"],
                check=True, capture_output=True,
            )  # fmt: skip
            lines = out.read_text().splitlines()
        poster.join()
    finally:
        server.stop()
    threads: dict[str, Counter[str]] = {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        thread = stack.split(";", 1)[0]
        threads.setdefault(thread, Counter())[stack] += int(count)
    main_thread = next((t for t in threads if "MainThread" in t), max(threads, key=lambda t: sum(threads[t].values())))
    stages: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = {}
    for stack, count in threads[main_thread].items():
        stage = stage_of(stack)
        stages[stage] += count
        leaves.setdefault(stage, Counter())[" < ".join(reversed(stack.split(";")[-4:]))] += count
    total = sum(stages.values())
    helpers: dict[str, Counter[str]] = {}
    for thread, samples in threads.items():
        if "sift-encode" in thread or "sift-tokenize" in thread or "sift-record" in thread:
            for stack, count in samples.items():
                name = next((n for n, patterns in HELPER_STAGES if any(p in stack for p in patterns)), "other")
                helpers.setdefault(thread, Counter())[name] += count
    print(f"py-spy, {args.seconds} s at 100 Hz, {args.mode}, worker thread ({main_thread}): {total} samples")
    for name, count in stages.most_common():
        print(f"{100 * count / total:6.1f} %  {name}")
        for leaf, n in leaves[name].most_common(args.top):
            print(f"          {100 * n / total:5.1f} %  {leaf[:220]}")
    for thread, counts in sorted(helpers.items()):
        n = sum(counts.values())
        shares = ", ".join(f"{name} {100 * c / n:.1f} %" for name, c in counts.most_common())
        print(f"{thread}: {shares}")
    print(
        json.dumps(
            {
                "mode": args.mode,
                "seconds": args.seconds,
                "samples": total,
                "stages": {k: round(v / total, 4) for k, v in stages.items()},
                "helper_threads": {
                    t: {k: round(v / sum(c.values()), 4) for k, v in c.items()} for t, c in helpers.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
