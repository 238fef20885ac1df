"""Where a request's time goes: py-spy samples of a `sift up` process while a bench phase sends it
requests, grouped by layer (the `--profile` option of bench/recommend.py and bench/match.py).

`Sampler(pid)` starts `py-spy record --format raw --threads --rate 200` on the process; `stop()`
ends it (SIGINT, so py-spy writes its file) and returns the summary. Idle samples are not
recorded (no --idle), so the shares are of the CPU the process spent; the worker's and beat's
threads, which idle through a latency phase, are counted apart from SERVING_THREADS'. Each API sample
goes to the first layer, in LAYERS' order, whose pattern its stack holds; `top` lists the most
sampled frames (self time) within the API threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("query embedding (tokenise, ONNX Runtime, pooling)", ("services/embedding/",)),
    ("vector store (Qdrant Edge query, retrieve)", ("services/vectors/",)),
    ("SQL (SQLAlchemy, sqlite3)", ("sqlalchemy", "sqlite3", "psycopg")),
    ("scoring and diversification (numpy)", ("services/recommend/scoring.py",)),
    ("learned model", ("services/recommend/learned.py",)),
    ("recommender, matcher (own Python)", ("services/recommend/", "services/matching/")),
    ("response models and JSON (pydantic, FastAPI)", ("pydantic", "fastapi/routing.py", "fastapi/encoders")),
    ("auth, middleware, HTTP server (uvicorn, starlette, h11)", ("services/api/", "starlette", "uvicorn", "h11")),
    ("event loop, threads (asyncio, anyio)", ("asyncio", "anyio", "threading.py")),
]
OTHER = "other"
# The threads that serve requests: the event loop, the threadpool of sync routes, the encode threads.
SERVING_THREADS = ("sift-api", "AnyIO worker", "sift-encode", "sift-tokenize", "sift-recommend-cache")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def layer_of(stack: str) -> str:
    return next((name for name, patterns in LAYERS if any(p in stack for p in patterns)), OTHER)


class Sampler:
    """py-spy on a process from construction to stop()."""

    def __init__(self, pid: int, *, rate: int = 200) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="sift-bench-profile-")) / "stacks.txt"
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [str(spy), "record", "--pid", str(pid), "--threads", "--rate", str(rate), "--format", "raw",
             "--output", str(self.out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.started = time.perf_counter()
        time.sleep(0.5)  # py-spy attaches

    def stop(self, *, top: int = 12) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return {"error": (err or b"").decode(errors="replace")[-500:]}
        return summarise(self.out.read_text().splitlines(), seconds=seconds, top=top)


def summarise(lines: list[str], *, seconds: float, top: int) -> dict[str, Any]:
    """Layers and top self frames of the API's samples; the other threads' total apart."""
    layers: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    others = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        if not any(name in stack.split(";", 1)[0] for name in SERVING_THREADS):
            others += n
            continue
        layers[layer_of(stack)] += n
        frames[stack.rsplit(";", 1)[-1][:160]] += n
    total = sum(layers.values()) or 1
    return {
        "seconds": round(seconds, 1),
        "api_samples": sum(layers.values()),
        "other_thread_samples": others,
        "layers": {k: round(v / total, 4) for k, v in layers.most_common()},
        "top_frames": {k: round(v / total, 4) for k, v in frames.most_common(top)},
    }


def show(name: str, summary: dict[str, Any]) -> None:
    if "error" in summary:
        print(f"# profile {name}: py-spy failed: {summary['error']}", flush=True)
        return
    print(
        f"# profile {name}: {summary['api_samples']} API samples in {summary['seconds']} s "
        f"(other threads {summary['other_thread_samples']})",
        flush=True,
    )
    for layer, share in summary["layers"].items():
        print(f"#   {100 * share:5.1f} %  {layer}", flush=True)
    print("#   top frames (self):", flush=True)
    for frame, share in summary["top_frames"].items():
        print(f"#   {100 * share:5.1f} %  {frame}", flush=True)
