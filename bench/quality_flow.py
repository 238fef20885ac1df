"""Classification quality through the product's own flow (`bench/quality.py --flow`): what a team
that labels its tickets (Banking77, `intent`) or its news (Financial PhraseBank, `sentiment`) gets.

    python bench/quality.py ../shared/data --flow [--datasets banking77|fpb] [--few 10] [--seed 1]
                            [--test-size N] [--no-recipe] [--sift-root PATH]

On a fresh data dir, a `sift up` process (embedded: SQLite, Qdrant Edge, on-disk broker):
 1. the dataset's training file is split deterministically into dev-train and dev-test (the
    --test-size texts with the smallest salted hash, by default 2,000 or a fifth of the file if
    smaller; the shared folder has no held-out file);
 2. --few labels per label of dev-train (numpy's generator seeded with --seed), or with --few 0
    every dev-train text, go in through POST /v1/labels (text, task, label), as a team's labels would;
 3. the rest of dev-train is ingested as unlabeled events (POST /v1/events: tickets, or news for
    `sentiment`) and processed;
 4. one training run, POST /v1/training/runs {"task": ...}, polled to its end, then its
    re-index (GET /v1/models) until the version is active;
 5. dev-test is ingested as new events, and each one's prediction for the task is read back with
    GET /v1/events/{id}: accuracy and macro-F1 of what a user sees.
In the same run, on the same labels and dev-test: TF-IDF + LR and a head on frozen embeddings
(references), and, unless --no-recipe, the recipe alone (services.training.tuning.fine_tune with
the labels and the same unlabeled texts, as `bench/quality.py` measures it). --sift-root runs the
`sift up` of another checkout (the code before a change) under the same driver; --env SIFT_X=v
(repeated) sets a setting of that `sift up` (the bench's own shell's SIFT_* are not passed). The beat's own
training check is pushed out (SIFT_TRAIN_CHECK_INTERVAL_S) so that the run is the one this bench starts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apikey import bearer, saved_key

from services.training import dataset

FLOW_SALT = "sift-flow-dev-test\x00"


def dev_split(
    examples: list[dataset.Example], test_size: int | None
) -> tuple[list[dataset.Example], list[dataset.Example]]:
    """(dev-train, dev-test): distinct texts, the test_size (None: 2,000 or a fifth if fewer) with the
    smallest salted hash are dev-test."""
    unique = list({e.text: e for e in examples}.values())
    test_size = test_size if test_size is not None else min(2000, len(unique) // 5)
    ranked = sorted(unique, key=lambda e: hashlib.sha1((FLOW_SALT + e.text).encode()).hexdigest())
    test = set(e.text for e in ranked[:test_size])
    return [e for e in unique if e.text not in test], [e for e in unique if e.text in test]


def start_sift(
    root: Path, data_dir: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, Any]:
    """A `sift up` process of the checkout at root, on a free port, with only extra_env's SIFT_*
    settings besides the bench's own; (process, base url, log file)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(
        SIFT_DATA_DIR=str(data_dir), SIFT_PORT=str(port), SIFT_LOG_LEVEL="WARNING", SIFT_TRAIN_CHECK_INTERVAL_S="86400"
    )
    env.update(extra_env or {})
    log = (data_dir / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.app", "up"], cwd=root, env=env, stdout=log, stderr=log)
    return proc, f"http://127.0.0.1:{port}", log


def wait_ready(http: Any, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sift up exited with {proc.returncode}")
        try:
            if http.get("/readyz").status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        time.sleep(1)
    raise SystemExit("sift up did not become ready in 300 s")


def post_chunks(http: Any, path: str, key: str, items: list[dict[str, Any]], size: int = 500) -> None:
    for start in range(0, len(items), size):
        response = http.post(path, json={key: items[start : start + size]})
        if response.status_code >= 300:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:500]}")


def wait_processed(http: Any, kind: str, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = http.get("/v1/stats").json()["events"].get(kind, {})
        if not counts.get("queued") and not counts.get("processing"):
            return
        time.sleep(2)
    raise SystemExit(f"{kind} events not processed in {timeout_s} s")


def train(http: Any, task: str, timeout_s: float = 2400) -> dict[str, Any]:
    """One run of task through the API, to its end; then its re-index, until the version is active."""
    run_id = http.post("/v1/training/runs", json={"task": task}).json()["run_id"]
    started, deadline, last = time.monotonic(), time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        run = http.get(f"/v1/training/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed"):
            break
        if run["stage"] != last:
            print(f"# run: {run['stage']} ({time.monotonic() - started:.0f} s)", flush=True)
            last = run["stage"]
        time.sleep(3)
    else:
        raise SystemExit("the training run did not end in time")
    run["wall_s"] = round(time.monotonic() - started, 1)
    if run["status"] != "succeeded":
        raise SystemExit(f"training run failed: {run.get('error')}")
    version = run["model_version"]
    while run["promoted"] and time.monotonic() < deadline:
        models = http.get("/v1/models", params={"task": task}).json()["models"]
        if any(m["version"] == version and m["status"] == "active" for m in models):
            break
        time.sleep(3)
    run["active_after_s"] = round(time.monotonic() - started, 1)
    return run


def predictions(http: Any, ids: list[str], task: str) -> list[dict[str, Any]]:
    return [http.get(f"/v1/events/{i}").json()["predictions"].get(task, {}) for i in ids]


def run_flow(
    root: Path,
    labels: list[dataset.Example],
    unlabeled: list[str],
    test: list[dataset.Example],
    *,
    task: str = "intent",
    kind: str = "ticket",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Steps 2-5 of the module docstring on a fresh data dir; the figures and the run's metrics."""
    import shutil

    import httpx

    data_dir = Path(tempfile.mkdtemp(prefix="sift-flow-"))
    proc, url, log = start_sift(root, data_dir, extra_env)
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            wait_ready(http, proc)
            http.headers.update(bearer(saved_key(data_dir)))
            post_chunks(
                http, "/v1/labels", "labels", [{"text": e.text, "task": task, "label": e.label} for e in labels]
            )
            events = [{"id": f"u-{i}", "kind": kind, "text": t} for i, t in enumerate(unlabeled)]
            post_chunks(http, "/v1/events", "events", events)
            wait_processed(http, kind)
            run = train(http, task)
            print(f"# run: {run['status']}, promoted {run['promoted']}, {run['wall_s']} s", flush=True)
            ids = [f"t-{i}" for i in range(len(test))]
            post_chunks(
                http,
                "/v1/events",
                "events",
                [{"id": i, "kind": kind, "text": e.text} for i, e in zip(ids, test, strict=True)],
            )
            wait_processed(http, kind)
            got = predictions(http, ids, task)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    from sklearn.metrics import f1_score

    gold, guessed = [e.label for e in test], [p.get("label", "") for p in got]
    served_by_run = sum(p.get("model_version") == run["model_version"] for p in got)
    return {
        "accuracy": round(sum(g == p for g, p in zip(gold, guessed, strict=True)) / len(gold), 4),
        "macro_f1": round(float(f1_score(gold, guessed, average="macro", labels=sorted(set(gold)))), 4),
        "train_s": run["wall_s"],
        "served_by_run": served_by_run,
        "run": {k: run[k] for k in ("status", "promoted", "model_version", "metrics", "wall_s", "active_after_s")},
    }
