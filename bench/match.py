"""Answer matching: Sift's matcher on Banking77 as an FAQ base, against plain nearest-neighbour, in one run.

    python bench/match.py ../shared/data/banking77/train.csv [--skip-fine-tune] [--latency-queries 300]
                          [--socket-only] [--profile]

The file is split with Sift's own deterministic stratified split (services.training.dataset.split, 20%
holdout, the one a training run makes). Each intent is an FAQ entry: id = the intent, question =
its first training text, paraphrases = its other training texts. The holdout texts are the
queries; a query is answered right when the entry ranked first is its intent (top-1), or when
its intent is among the first three entries (top-3). In this run:
  ref      plain nearest-neighbour: the frozen base model, brute-force numpy cosine over the
           paraphrase vectors; top-1 = intent of the nearest paraphrase, top-3 = the first three
           distinct intents in similarity order;
  frozen   Sift's matcher (services.matching.matcher) in a real in-process Sift (SQLite + embedded Qdrant)
           before any training: the score is paraphrase-only;
  trained  the same Sift after a real training run of the `intent` task on the training texts
           (fine-tuned encoder + head, re-index of the FAQ base; --skip-fine-tune: head only).
Abstain at 0.95 precision, measured out of sample: the holdout, sorted by text, is cut into two
halves by index parity; a calibration (services.matching.calibration.fit for Sift, the top
similarity with choose_threshold for ref) is fitted on one half and applied to the other, both
ways; "precision" is the share of answered queries whose first answer is right, "abstain" the
share not answered, each the mean of the two directions.
Latency: p50/p99 ms of one single-text match at a time (query embedding included; also split into
the longest tenth of the texts and the rest), in process
(Matcher.match_texts), through the ASGI app (POST /v1/match via TestClient), and over a real
socket to a `sift up` process (10,000 points only, one at a time and then from 8 clients at once,
each with the server's CPU per match; --socket-only runs just that line; --profile samples
that process with py-spy during the first, bench/request_profile.py), for a base of 1 point and
for a base of 10,000 points: every csv row as a paraphrase of its intent (9,999 distinct texts),
topped up with "<text> please" variants of the first rows (the exact count is printed).
Prints each figure as it is measured, then one JSON line with all of them and each phase's wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

os.environ["HF_HUB_OFFLINE"] = "1"

import request_profile  # noqa: E402
from apikey import bearer, runtime_key, saved_key  # noqa: E402  (bench/ is not a package)
from clients import run_clients  # noqa: E402

from services.config import Settings  # noqa: E402
from services.db.migrate import upgrade  # noqa: E402
from services.embedding.encoder import Encoder, set_threads  # noqa: E402
from services.matching import calibration as match_calibration  # noqa: E402
from services.matching import faq  # noqa: E402
from services.matching.matcher import MatchResult  # noqa: E402
from services.runtime import Runtime, reset_runtime  # noqa: E402
from services.training import (  # noqa: E402
    dataset,
    labels,
    registry,
)

TARGET = 0.95
LIMITS = faq.FaqLimits(max_faqs=1000, max_paraphrases=1_000_000, max_text_chars=100_000)
FAQ_CHUNK = 20
LABEL_CHUNK = 1000
MATCH_CHUNK = 256
WARM_UP = 5
CLIENTS = 8
PHASES: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a phase into PHASES."""
    started = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] = round(time.perf_counter() - started, 1)
        print(f"# phase {name}: {PHASES[name]:.1f} s", flush=True)


def load(path: Path) -> list[dataset.Example]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [dataset.Example(r["text"], r["category"]) for r in csv.DictReader(handle) if r["text"].strip()]


def faq_base(examples: Sequence[dataset.Example]) -> list[faq.FaqIn]:
    """One entry per intent: the first text is the question, the others its paraphrases."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for example in examples:
        by_intent[example.label].append(example.text)
    return [
        faq.FaqIn(id=intent, question=texts[0], paraphrases=texts[1:], answer=f"answer for {intent}")
        for intent, texts in sorted(by_intent.items())
    ]


def padded_base(examples: Sequence[dataset.Example], *, points: int) -> list[faq.FaqIn]:
    """Every example as a paraphrase of its intent, plus "<text> please" variants up to `points` texts."""
    distinct = list(dict.fromkeys((e.label, e.text.strip()) for e in examples))
    variants = [dataset.Example(f"{text} please", label) for label, text in distinct[: max(0, points - len(distinct))]]
    return faq_base([*examples, *variants])


def new_runtime(encoder: Encoder, **overrides: Any) -> Runtime:
    """A real Sift in a fresh temporary data dir, serving the already loaded base encoder."""
    data_dir = Path(tempfile.mkdtemp(prefix="sift-bench-match-"))
    settings = Settings(data_dir=data_dir, log_level="WARNING", device="cpu", **overrides)
    upgrade(settings.sqlalchemy_url)
    rt = reset_runtime(settings)
    rt._made["encoder"] = encoder
    return rt


def close(rt: Runtime) -> None:
    """Close a runtime and delete its temporary data dir."""
    rt.close()
    shutil.rmtree(rt.settings.data_dir, ignore_errors=True)


def write_faqs(rt: Runtime, faqs: Sequence[faq.FaqIn]) -> int:
    """Write the FAQ base through services.matching.faq.upsert; returns the points of its collection."""
    index = rt.matcher.index()  # before the session: it reads SQL, and SQLite transactions take turns
    for start in range(0, len(faqs), FAQ_CHUNK):
        with rt.db.session_scope() as session:
            faq.upsert(session, faqs=faqs[start : start + FAQ_CHUNK], index=index, limits=LIMITS)
    return rt.store.count(index.collection)


def ranked_accuracy(rankings: Sequence[Sequence[str]], gold: Sequence[str]) -> dict[str, float]:
    top1 = np.mean([bool(r) and r[0] == g for r, g in zip(rankings, gold, strict=True)])
    top3 = np.mean([g in r[:3] for r, g in zip(rankings, gold, strict=True)])
    return {"top1": round(float(top1), 4), "top3": round(float(top3), 4)}


def reference(encoder: Encoder, faqs: Sequence[faq.FaqIn], holdout: Sequence[dataset.Example]) -> dict[str, Any]:
    """Plain nearest-neighbour over the same paraphrases with the frozen base model."""
    pairs = [(f.id, text) for f in faqs for text in faq.texts_of(f.question, f.paraphrases)]
    points = encoder.encode([text for _, text in pairs])
    queries = encoder.encode([e.text for e in holdout])
    owners = np.array([faq_id for faq_id, _ in pairs])
    rankings, top_similarity = [], []
    for row in queries @ points.T:
        order = np.argsort(-row, kind="stable")
        distinct = list(dict.fromkeys(owners[order[:200]]))[:3]
        if len(distinct) < 3:  # the 200 nearest hold fewer than 3 intents: take all
            distinct = list(dict.fromkeys(owners[order]))[:3]
        rankings.append([str(x) for x in distinct])
        top_similarity.append(float(row[order[0]]))
    return {"rankings": rankings, "confidence": np.array(top_similarity), "points": len(pairs)}


def sift_match(rt: Runtime, texts: Sequence[str]) -> list[MatchResult]:
    out: list[MatchResult] = []
    for start in range(0, len(texts), MATCH_CHUNK):
        out += rt.matcher.match_texts(list(texts[start : start + MATCH_CHUNK]), top_k=3)
    return out


def halves(holdout: Sequence[dataset.Example]) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the holdout: index parity after sorting by text."""
    order = sorted(range(len(holdout)), key=lambda i: (holdout[i].text, holdout[i].label))
    return np.array(order[0::2]), np.array(order[1::2])


def answered_figures(answered: np.ndarray, correct: np.ndarray) -> dict[str, float | None]:
    precision = float(correct[answered].mean()) if answered.any() else None
    return {"precision": precision, "abstain": float(1 - answered.mean())}


def cross(answered_on: Any, correct: np.ndarray, parts: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Fit on one half, apply to the other, both ways; answered_on(fit_idx, apply_idx) -> answered mask."""
    runs = [answered_figures(answered_on(f, a), correct[a]) for f, a in (parts, parts[::-1])]
    precisions = [r["precision"] for r in runs]
    defined = [p for p in precisions if p is not None]
    return {
        "precision": round(float(np.mean(defined)), 4) if defined else None,
        "abstain": round(float(np.mean([r["abstain"] for r in runs])), 4),
        "precision_each": [None if p is None else round(p, 4) for p in precisions],
        "abstain_each": [round(float(r["abstain"] or 0.0), 4) for r in runs],
    }


def abstain_calibrated(features: np.ndarray, correct: np.ndarray, parts: tuple[np.ndarray, np.ndarray]) -> dict:
    """calibration.fit on one half; sigmoid(a + b*top + c*margin + d*sim) >= threshold on the other."""

    def answered(fit_idx: np.ndarray, apply_idx: np.ndarray) -> np.ndarray:
        fitted = match_calibration.fit(features[fit_idx], correct[fit_idx], target=TARGET)
        a, b, c, d = fitted.coef
        z = a + features[apply_idx] @ np.array([b, c, d])
        return np.asarray(1.0 / (1.0 + np.exp(-z)) >= fitted.threshold)

    return cross(answered, correct, parts)


def abstain_similarity(confidence: np.ndarray, correct: np.ndarray, parts: tuple[np.ndarray, np.ndarray]) -> dict:
    """The raw top similarity as confidence; the threshold chosen with choose_threshold on one half."""

    def answered(fit_idx: np.ndarray, apply_idx: np.ndarray) -> np.ndarray:
        threshold, _, _ = match_calibration.choose_threshold(confidence[fit_idx], correct[fit_idx], target=TARGET)
        return np.asarray(confidence[apply_idx] >= threshold)

    return cross(answered, correct, parts)


def score_results(results: Sequence[MatchResult], holdout: Sequence[dataset.Example], parts: Any) -> dict[str, Any]:
    """Top-1/top-3 accuracy and the out-of-sample abstain figures of Sift's matches."""
    gold = [e.label for e in holdout]
    rankings = [[m.faq_id for m in r.matches] for r in results]
    correct = np.array([float(bool(r) and r[0] == g) for r, g in zip(rankings, gold, strict=True)])
    features = np.array([r.features() for r in results], dtype=float)
    return {**ranked_accuracy(rankings, gold), "abstain_at_95": abstain_calibrated(features, correct, parts)}


def score_reference(ref: dict[str, Any], holdout: Sequence[dataset.Example], parts: Any) -> dict[str, Any]:
    gold = [e.label for e in holdout]
    correct = np.array([float(r[0] == g) for r, g in zip(ref["rankings"], gold, strict=True)])
    return {
        **ranked_accuracy(ref["rankings"], gold),
        "points": ref["points"],
        "abstain_at_95": abstain_similarity(ref["confidence"], correct, parts),
    }


def show(name: str, result: dict[str, Any]) -> None:
    a = result["abstain_at_95"]
    precision = "n/a" if a["precision"] is None else f"{a['precision']:.4f}"
    print(
        f"{name:<34}{result['top1']:>8.4f}{result['top3']:>8.4f}{precision:>12}{a['abstain']:>10.4f}"
        f"   (each half: precision {a['precision_each']}, abstain {a['abstain_each']})",
        flush=True,
    )


def record_labels(rt: Runtime, train: Sequence[dataset.Example]) -> int:
    """The training texts as `intent` labels (each makes a queued ticket event)."""
    written = 0
    for start in range(0, len(train), LABEL_CHUNK):
        chunk = [labels.LabelIn(text=e.text, task="intent", label=e.label) for e in train[start : start + LABEL_CHUNK]]
        with rt.db.session_scope() as session:
            done = labels.record(
                session, labels=chunk, max_labels=LABEL_CHUNK, max_text_chars=rt.settings.max_text_chars
            )
        written += done.written
    return written


def train_intent(rt: Runtime) -> dict[str, Any]:
    """A real training run of the `intent` task, then the re-index its promotion starts, if any."""
    with rt.db.session_scope() as session:
        run_id = registry.new_run(session, task="intent").id
    started = time.perf_counter()
    outcome = rt.trainer.execute(run_id)
    run_seconds = time.perf_counter() - started
    status, started = None, time.perf_counter()
    if outcome.reindex_job is not None:
        status = rt.reindexer.step(outcome.reindex_job, max_seconds=1e9)
        while status == "running":
            status = rt.reindexer.step(outcome.reindex_job, max_seconds=1e9)
        if status != "switched":
            raise SystemExit(f"re-index job {outcome.reindex_job} ended {status!r}, not switched")
    rt.models.refresh(force=True)
    m = outcome.metrics
    tuned = m.get("fine_tune") or {}
    return {
        "version": outcome.version,
        "promoted": outcome.promoted,
        "run_accuracy": m.get("accuracy"),
        "run_macro_f1": m.get("macro_f1"),
        "run_holdout": m.get("holdout"),
        "run_train": m.get("train"),
        "train_seconds": m.get("train_seconds"),
        "run_seconds": round(run_seconds, 1),
        "fine_tuned": bool(tuned),
        "epochs": tuned.get("epochs"),
        "reindex": status,
        "reindex_seconds": round(time.perf_counter() - started, 1),
        "notes": outcome.notes,
    }


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def timed(call: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Warm-up calls, then one call per text, one at a time; also the figures of the longest
    tenth of the texts and of the rest (a query's embedding grows with its tokens)."""
    for text in texts[:WARM_UP]:
        call(text)
    seconds = []
    for text in texts:
        started = time.perf_counter()
        call(text)
        seconds.append(time.perf_counter() - started)
    figures: dict[str, Any] = percentiles(seconds)
    cut = float(np.percentile([len(t) for t in texts], 90))
    longest = [s for s, t in zip(seconds, texts, strict=True) if len(t) > cut]
    rest = [s for s, t in zip(seconds, texts, strict=True) if len(t) <= cut]
    if longest and rest:
        figures["by_length"] = {
            "longest_from_chars": round(cut),
            "longest": percentiles(longest),
            "rest": percentiles(rest),
        }
    return figures


def latency(encoder: Encoder, faqs: Sequence[faq.FaqIn], texts: Sequence[str]) -> dict[str, Any]:
    """p50/p99 of single-text matches in process and over HTTP, against a fresh base of `faqs`."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app

    rt = new_runtime(encoder)
    try:
        points = write_faqs(rt, faqs)
        in_process = timed(lambda t: rt.matcher.match_texts([t], top_k=3), texts)

        def post(text: str) -> None:
            response = client.post("/v1/match", json={"text": text, "top_k": 3})
            if response.status_code != 200:
                raise SystemExit(f"POST /v1/match: {response.status_code} {response.text[:300]}")

        with TestClient(create_app(rt, warm_model=False), headers=bearer(runtime_key(rt))) as client:
            http = timed(post, texts)
    finally:
        close(rt)
    return {"points": points, "queries": len(texts), "in_process": in_process, "http": http}


def socket_latency(faqs: Sequence[faq.FaqIn], texts: Sequence[str], *, profile: bool = False) -> dict[str, Any]:
    """p50/p99 of `POST /v1/match` over a real socket to a `sift up` process (embedded mode: SQLite,
    Qdrant Edge, on-disk broker) holding `faqs`, one request at a time."""
    import signal
    import socket
    import subprocess

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    data_dir = Path(tempfile.mkdtemp(prefix="sift-bench-up-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(SIFT_DATA_DIR=str(data_dir), SIFT_PORT=str(port), SIFT_LOG_LEVEL="WARNING")
    log = (data_dir / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.app", "up"], env=env, stdout=log, stderr=log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            _wait_ready(http)
            http.headers.update(bearer(saved_key(data_dir)))
            for start in range(0, len(faqs), 10):
                body = {"faqs": [item.model_dump() for item in faqs[start : start + 10]]}
                http.post("/v1/faqs:bulk", json=body).raise_for_status()

            def post(text: str) -> None:
                http.post("/v1/match", json={"text": text, "top_k": 3}).raise_for_status()

            for text in texts[:WARM_UP]:  # the first match derives the base's threshold: not in the profile
                post(text)
            sampler = request_profile.Sampler(proc.pid) if profile else None
            cpu = request_profile.cpu_seconds(proc.pid)
            figures = timed(post, texts)
            figures["server_cpu_ms"] = round((request_profile.cpu_seconds(proc.pid) - cpu) * 1000 / len(texts), 2)
            if sampler is not None:
                figures["profile"] = sampler.stop()
                request_profile.show("match", figures["profile"])
            cpu = request_profile.cpu_seconds(proc.pid)
            concurrent = concurrent_matches(f"http://127.0.0.1:{port}", dict(http.headers), texts)
            concurrent["server_cpu_ms"] = round((request_profile.cpu_seconds(proc.pid) - cpu) * 1000 / len(texts), 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    points = sum(len(faq.texts_of(item.question, item.paraphrases)) for item in faqs)
    return {"points": points, "queries": len(texts), "socket": figures, "socket_conc8": concurrent}


def concurrent_matches(base_url: str, headers: dict[str, str], texts: Sequence[str]) -> dict[str, Any]:
    """CLIENTS threads, each with its own connection and every CLIENTS-th text; p50/p99 of every
    request and the matches answered per second of the whole."""

    def client(k: int, http: Any) -> list[float]:
        seconds = []
        for text in texts[k::CLIENTS]:
            started = time.perf_counter()
            http.post("/v1/match", json={"text": text, "top_k": 3}).raise_for_status()
            seconds.append(time.perf_counter() - started)
        return seconds

    results, wall = run_clients(base_url, headers, CLIENTS, client)
    seconds = [x for s in results for x in s]
    figures: dict[str, Any] = percentiles(seconds)
    figures.update(clients=CLIENTS, per_s=round(len(seconds) / wall, 1))
    return figures


def _wait_ready(http: Any) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if http.get("/readyz").status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise SystemExit("sift up did not become ready in 180 s")


def show_latency(name: str, result: dict[str, Any]) -> None:
    for way in ("in_process", "http", "socket", "socket_conc8"):
        if way not in result:
            continue
        r = result[way]
        extra = f", {r['per_s']} matches/s" if "per_s" in r else ""
        extra += f", server CPU {r['server_cpu_ms']} ms a match" if "server_cpu_ms" in r else ""
        print(
            f"latency {name:<18} {way:<12} points {result['points']:>6}  "
            f"p50 {r['p50_ms']:>7.2f} ms  p99 {r['p99_ms']:>7.2f} ms  ({result['queries']} queries{extra})",
            flush=True,
        )
        if "by_length" in r:
            b = r["by_length"]
            print(
                f"  by length: texts over {b['longest_from_chars']} chars (the longest tenth) "
                f"p50 {b['longest']['p50_ms']:.2f} / p99 {b['longest']['p99_ms']:.2f} ms, "
                f"the rest p50 {b['rest']['p50_ms']:.2f} / p99 {b['rest']['p99_ms']:.2f} ms",
                flush=True,
            )


def matching_phases(
    encoder: Encoder, train: list[dataset.Example], holdout: list[dataset.Example], skip_fine_tune: bool
) -> dict[str, Any]:
    """ref, frozen and trained accuracy and abstain figures."""
    faqs, parts, texts = faq_base(train), halves(holdout), [e.text for e in holdout]
    out: dict[str, Any] = {}
    print(f"{'method':<34}{'top1':>8}{'top3':>8}{'prec@abst':>12}{'abstain':>10}", flush=True)
    with phase("reference"):
        out["ref"] = score_reference(reference(encoder, faqs, holdout), holdout, parts)
    show("ref: plain NN (frozen base model)", out["ref"])
    overrides = {"train_fine_tune_min_labels": 10**9} if skip_fine_tune else {}
    rt = new_runtime(encoder, **overrides)
    try:
        with phase("faq_write"):
            out["faq_points"] = write_faqs(rt, faqs)
        with phase("frozen_match"):
            out["frozen"] = score_results(sift_match(rt, texts), holdout, parts)
        show("sift frozen (paraphrases only)", out["frozen"])
        with phase("record_labels"):
            out["labels_written"] = record_labels(rt, train)
        with phase("train"):
            out["run"] = train_intent(rt)
        print(f"# training run: {json.dumps(out['run'])}", flush=True)
        with phase("trained_match"):
            out["trained"] = score_results(sift_match(rt, texts), holdout, parts)
        how = "head only" if not out["run"]["fine_tuned"] else "fine-tuned + head"
        show(f"sift trained ({how})", out["trained"])
    finally:
        close(rt)
    return out


def latency_phases(
    encoder: Encoder,
    examples: list[dataset.Example],
    holdout: list[dataset.Example],
    n: int,
    socket_only: bool,
    profile: bool = False,
) -> dict[str, Any]:
    """Latency against a base of 1 point and against every csv row as a paraphrase."""
    step = max(1, len(holdout) // max(1, n))
    queries = [e.text for e in holdout[::step][:n]]  # spread over the intents
    one = [faq.FaqIn(id="only", question=examples[0].text, answer="answer for only")]
    out: dict[str, Any] = {}
    ten_k = padded_base(examples, points=10_000)
    if not socket_only:
        for name, base, title in (("latency_1", one, "1 point"), ("latency_10k", ten_k, "10,000 points")):
            with phase(name):
                out[name] = latency(encoder, base, queries)
            show_latency(title, out[name])
    with phase("latency_10k_socket"):
        out["latency_10k_socket"] = socket_latency(ten_k, queries, profile=profile)
    show_latency("10,000 points", out["latency_10k_socket"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="Banking77 train.csv (columns text, category)")
    parser.add_argument("--skip-fine-tune", action="store_true", help="train the intent head only (fast)")
    parser.add_argument("--latency-queries", type=int, default=300, help="holdout texts timed per latency line")
    parser.add_argument("--socket-only", action="store_true", help="only the latency against a real `sift up`")
    parser.add_argument("--profile", action="store_true", help="py-spy on `sift up` during the socket line")
    args = parser.parse_args()
    set_threads(2)
    started, s = time.perf_counter(), Settings()
    with phase("load_model"):
        encoder = Encoder.load(s.model_path, device="cpu", max_seq_length=s.max_seq_length, batch_size=32)
    examples = load(args.data)
    train, holdout = dataset.split(examples, holdout=0.2, min_per_label=1)
    print(
        f"# {args.data}: {len(examples)} texts, {len({e.label for e in examples})} intents; "
        f"{len(train)} train (FAQ paraphrases / labels), {len(holdout)} holdout (queries); "
        f"cores {len(os.sched_getaffinity(0))}, torch threads 2",
        flush=True,
    )
    results = {} if args.socket_only else matching_phases(encoder, train, holdout, args.skip_fine_tune)
    results.update(latency_phases(encoder, examples, holdout, args.latency_queries, args.socket_only, args.profile))
    PHASES["total"] = round(time.perf_counter() - started, 1)
    knobs = {"candidates": s.match_candidates, "temperature": s.match_temperature, "head_weight": s.match_head_weight}
    sizes = {"texts": len(examples), "train": len(train), "holdout": len(holdout)}
    head = {"dataset": str(args.data), **sizes, "target": TARGET, "match": knobs, "skip_fine_tune": args.skip_fine_tune}
    print(json.dumps({**head, **results, "phases_s": PHASES}, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


if __name__ == "__main__":
    main()
