"""Classification quality: what Sift's training gives on real data, against a classical reference.

    python bench/quality.py ../shared/data [--datasets banking77,fpb] [--few 10] [--draws 5] [--epochs 1]
                            [--backends torch,onnx-int8] [--device auto|cpu|cuda]

For each dataset (Banking77 `intent`, Financial PhraseBank `sentiment`) the training file is split
with Sift's own deterministic stratified split (services.training.dataset.split, 20% holdout), then on
the same holdout, in this run:
  ref  TF-IDF (word 1-2 grams + char 2-5 grams) + logistic regression;
  (a)  zero-shot: Sift's zero-shot head over the label descriptions;
  (b)  a head on frozen embeddings (services.training.heads.fit_head);
  (c)  a head after fine-tuning the encoder (services.training.tuning.fine_tune, the code a run uses).
For Banking77 also with --few labels per class: the first ones in the split's hash order, and
--draws random draws (numpy's generator seeded 1..N); the last lines give the mean over all draws
(a single draw of 10 per class moves a frozen-embedding head by about +-0.7 points, sd).
With --backends, (a), (b) and (c) are measured for each encoder backend (SIFT_ENCODER_BACKEND),
the head fit on that backend's vectors as a run does, the encoder fine-tuned once; the last
lines give each backend's accuracy difference to the first one.
--device auto runs on a GPU when one is visible (fp16 encoder, mixed-precision fine-tuning, as a
run there does), else on the CPU.
Prints accuracy, macro-F1 and training wall time per line, and one JSON line at the end.

--flow measures instead what a user gets through the product's own entry points (a `sift up`
process, labels and events through the API, one training run, predictions read back), on a
deterministic dev-train / dev-test split of the first of --datasets' training file:
bench/quality_flow.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["HF_HUB_OFFLINE"] = "1"

from services.classify import tasks  # noqa: E402
from services.classify.head import Head  # noqa: E402
from services.config import Settings  # noqa: E402
from services.embedding.encoder import Encoder, resolve_device, set_threads  # noqa: E402
from services.training import (  # noqa: E402
    dataset,
    heads,
    tuning,
)

SENTIMENT = {
    "negative": "bad news for the company: losses, falling sales, layoffs, a lower forecast",
    "neutral": "a plain statement of fact about the company, neither good nor bad",
    "positive": "good news for the company: profit, growth, higher sales, a new contract",
}


def load(path: Path) -> list[dataset.Example]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    column = "category" if "category" in rows[0] else "label"
    return [dataset.Example(r["text"], r[column]) for r in rows if r["text"].strip()]


def few_per_label(train: list[dataset.Example], n: int, seed: int | None = None) -> list[dataset.Example]:
    """n examples of each label: the first ones in the split's hash order (seed None), or a
    random draw with numpy's generator seeded with seed."""
    if seed is None:
        out: list[dataset.Example] = []
        seen: dict[str, int] = defaultdict(int)
        for example in train:  # split() returns each label's examples in hash order
            if seen[example.label] < n:
                out.append(example)
                seen[example.label] += 1
        return out
    by_label: dict[str, list[dataset.Example]] = defaultdict(list)
    for example in train:
        by_label[example.label].append(example)
    rng = np.random.default_rng(seed)
    drawn: list[dataset.Example] = []
    for label in sorted(by_label):
        group = by_label[label]
        drawn += [group[i] for i in sorted(rng.choice(len(group), size=min(n, len(group)), replace=False))]
    return drawn


def tfidf(train: list[dataset.Example], test: list[dataset.Example]) -> dict[str, Any]:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    texts = [e.text for e in train]
    x = hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    clf = LogisticRegression(C=20, max_iter=3000).fit(x, [e.label for e in train])
    seconds = time.perf_counter() - started
    xt = hstack([words.transform([e.text for e in test]), chars.transform([e.text for e in test])]).tocsr()
    predicted = clf.predict(xt)
    gold = [e.label for e in test]
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro")), 4),
        "train_s": round(seconds, 1),
    }


def head_on(encoder: Encoder, train: list[dataset.Example], test: list[dataset.Example]) -> dict[str, Any]:
    started = time.perf_counter()
    head = heads.fit_head(encoder.encode([e.text for e in train]), [e.label for e in train])
    seconds = time.perf_counter() - started
    result = heads.evaluate(head, encoder.encode([e.text for e in test]), [e.label for e in test])
    return {**result, "train_s": round(seconds, 1)}


def zero_shot(
    encoder: Encoder, labels: dict[str, str], test: list[dataset.Example], settings: Settings
) -> dict[str, Any]:
    names = sorted(labels)
    head = Head.zero_shot(names, encoder.encode([labels[n] for n in names]), temperature=settings.zero_shot_temperature)
    return {**heads.evaluate(head, encoder.encode([e.text for e in test]), [e.label for e in test]), "train_s": 0.0}


def tuned(
    train: list[dataset.Example],
    test: list[dataset.Example],
    settings: Settings,
    workdir: Path,
    unlabeled: list[str],
    backends: list[str],
    descriptions: dict[str, str],
    device: str,
) -> dict[str, dict[str, Any]]:
    """Fine-tune once (the code a run uses), then per backend: load the encoder on it, fit the
    head on its vectors, evaluate. Training time is the fine-tuning plus that backend's head."""
    started = time.perf_counter()
    train = dataset.with_label_descriptions(train, descriptions, settings)  # as a run does
    fit, val = dataset.fine_tune_split(train, settings)
    report, classifier = tuning.fine_tune(
        settings.model_path,
        fit,
        out_dir=workdir,
        settings=settings,
        device=device,
        progress=lambda *_: None,
        unlabeled=unlabeled,
    )
    tune_seconds = time.perf_counter() - started
    out: dict[str, dict[str, Any]] = {}
    for backend in backends:
        started = time.perf_counter()
        encoder = tuning.load_tuned(workdir, settings=settings, device=device, backend=backend)
        head, head_report = heads.head_after_fine_tune(
            encoder, train, fit=fit, val=val, unlabeled=unlabeled, settings=settings, classifier=classifier
        )
        seconds = tune_seconds + time.perf_counter() - started
        result = heads.evaluate(head, encoder.encode([e.text for e in test]), [e.label for e in test])
        keys = ("seconds", "budget_stopped", "pseudo_labeled", "epochs", "soup", "step_s", "step_s_seen")
        out[backend] = {**result, "train_s": round(seconds, 1), **{k: report[k] for k in keys}, **head_report}
    return out


def flow(args: argparse.Namespace, settings: Settings, base: Encoder, device: str) -> None:
    """--flow: the product's flow on the first of --datasets with --few labels per class, or all with
    --few 0 (bench/quality_flow.py)."""
    from quality_flow import dev_split, run_flow

    name = args.datasets.split(",")[0]
    task, kind = ("sentiment", "news") if name == "fpb" else ("intent", "ticket")
    dev_train, dev_test = dev_split(load(args.data / name / "train.csv"), args.test_size)
    labels = few_per_label(dev_train, args.few, args.seed) if args.few else dev_train
    chosen = {e.text for e in labels}
    unlabeled = [e.text for e in dev_train if e.text not in chosen]
    tag = f"{name} {args.few}/class seed {args.seed}" if args.few else f"{name} all labels"
    print(f"# {tag}: {len(labels)} labels, {len(unlabeled)} unlabeled {kind}, {len(dev_test)} dev-test (flow)")
    print(f"{'dataset':<30}{'method':<40}{'acc':>8}{'macroF1':>9}{'train s':>9}", flush=True)
    results: list[dict[str, Any]] = []

    def line(method: str, result: dict[str, Any]) -> None:
        results.append({"dataset": tag, "method": method, **result})
        print(f"{tag:<30}{method:<40}{result['accuracy']:>8.4f}{result['macro_f1']:>9.4f}{result['train_s']:>9.1f}")

    line("ref: TF-IDF + logistic regression", tfidf(labels, dev_test))
    line("ref: head on frozen embeddings", head_on(base, labels, dev_test))
    extra_env = dict(item.split("=", 1) for item in args.env)
    result = run_flow(args.sift_root, labels, unlabeled, dev_test, task=task, kind=kind, extra_env=extra_env)
    line("sift flow: API labels, run, predictions", result)
    metrics = result["run"]["metrics"]
    keys = ("accuracy", "se", "estimate", "train", "holdout", "unlabeled_pool", "pseudo_labels_kept", "baseline")
    print(f"# run {result['run']['model_version']}: " + json.dumps({k: metrics.get(k) for k in keys}), flush=True)
    print(f"# served by the run's version: {result['served_by_run']} of {len(dev_test)}", flush=True)
    if not args.no_recipe:
        descriptions = SENTIMENT if name == "fpb" else {x: tasks.describe(x) for x in {e.label for e in labels}}
        with tempfile.TemporaryDirectory() as tmp:
            recipe = tuned(labels, dev_test, settings, Path(tmp), unlabeled, ["torch"], descriptions, device)
        line("ref: the recipe alone (bench, no flow)", recipe["torch"])
    print(
        json.dumps(
            {"flow": True, "seed": args.seed, "sift_root": str(args.sift_root), "env": extra_env, "results": results}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder (banking77/, fpb/)")
    parser.add_argument("--datasets", default="banking77,fpb")
    parser.add_argument("--few", type=int, default=10, help="labels per class for the Banking77 few-shot lines")
    parser.add_argument(
        "--draws",
        type=int,
        default=5,
        help="Banking77 few-labels lines: random draws (seeds 1..N) besides the hash-order one; the mean is over all",
    )
    parser.add_argument("--epochs", type=float, default=None, help="override SIFT_TRAIN_EPOCHS")
    parser.add_argument("--skip-fine-tune", action="store_true")
    parser.add_argument("--only-few", action="store_true", help="Banking77: only the few-labels lines")
    parser.add_argument("--backends", default="torch", help="encoder backends to compare, e.g. torch,onnx-int8")
    parser.add_argument("--device", default="auto", help="auto (a GPU when visible), cpu or cuda")
    parser.add_argument("--flow", action="store_true", help="through the product's flow (bench/quality_flow.py)")
    parser.add_argument("--seed", type=int, default=1, help="--flow: the draw of --few labels per intent")
    parser.add_argument(
        "--test-size", type=int, default=None, help="--flow: texts kept as dev-test (2,000, or a fifth if fewer)"
    )
    parser.add_argument("--no-recipe", action="store_true", help="--flow: without the recipe-only reference")
    parser.add_argument("--sift-root", type=Path, default=ROOT, help="--flow: the checkout whose `sift up` runs")
    parser.add_argument("--env", action="append", default=[], help="--flow: SIFT_X=value for that `sift up`")
    args = parser.parse_args()
    backends = args.backends.split(",")
    device = resolve_device(args.device)

    settings = Settings()
    if args.epochs:
        settings.train_epochs = args.epochs
    set_threads(settings.threads_for_this_process())
    bases = {
        b: Encoder.load(
            settings.model_path,
            device=device,
            max_seq_length=settings.max_seq_length,
            backend=b,
            cache_dir=settings.onnx_cache_dir,
        )
        for b in backends
    }
    if args.flow:
        flow(args, settings, bases[backends[0]], device)
        return
    results: list[dict[str, Any]] = []
    print(f"# device {device}")
    print(f"{'dataset':<18}{'method':<34}{'acc':>8}{'macroF1':>9}{'train s':>9}")

    def line(dataset: str, method: str, result: dict[str, Any], backend: str | None = None) -> None:
        results.append({"dataset": dataset, "method": method, "backend": backend, **result})
        if backend and len(backends) > 1:
            method = f"{method} [{backend}]"
        print(
            f"{dataset:<18}{method:<34}{result['accuracy']:>8.4f}{result['macro_f1']:>9.4f}{result['train_s']:>9.1f}",
            flush=True,
        )

    for name in args.datasets.split(","):
        examples = load(args.data / name / "train.csv")
        train, test = dataset.split(examples, holdout=0.2)
        labels = SENTIMENT if name == "fpb" else {x: tasks.describe(x) for x in {e.label for e in examples}}
        sets = [] if (args.only_few and name == "banking77") else [(name, train)]
        if name == "banking77" and args.few:
            sets.append((f"{name} {args.few}/class", few_per_label(train, args.few)))
            for seed in range(1, args.draws + 1):
                sets.append((f"{name} {args.few}/class draw {seed}", few_per_label(train, args.few, seed)))
        for tag, subset in sets:
            print(
                f"# {tag}: {len(subset)} train, {len(test)} holdout, {len({e.label for e in subset})} labels",
                flush=True,
            )
            line(tag, "ref: TF-IDF + logistic regression", tfidf(subset, test))
            for backend, base in bases.items():
                if subset is train:
                    result = zero_shot(base, labels, test, settings)
                    line(tag, "(a) zero-shot (label descriptions)", result, backend)
                line(tag, "(b) head on frozen embeddings", head_on(base, subset, test), backend)
            if not args.skip_fine_tune:
                # As in a run: with few labels per class, the kind's unlabeled events (here: the
                # other training texts, labels withheld) are pseudo-labeled for the fine-tuning.
                few = subset is not train and settings.train_pseudo_below > args.few
                chosen = set(subset)
                unlabeled = [e.text for e in train if e not in chosen] if few else []
                method = "(c) fine-tuned encoder + head" + (" (+unlabeled)" if unlabeled else "")
                with tempfile.TemporaryDirectory() as tmp:
                    for backend, result in tuned(
                        subset, test, settings, Path(tmp), unlabeled, backends, labels, device
                    ).items():
                        line(tag, method, result, backend)
    draws = [r for r in results if "/class" in r["dataset"]]
    if args.draws and draws:
        print(f"# {args.few}/class: mean and standard deviation over the {args.draws + 1} draws")
        groups: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
        for r in draws:
            groups[(r["method"], r["backend"])].append(r)
        for (method_name, backend), rows in groups.items():
            mean = {k: float(np.mean([r[k] for r in rows])) for k in ("accuracy", "macro_f1", "train_s")}
            summary = {"accuracy": round(mean["accuracy"], 4), "macro_f1": round(mean["macro_f1"], 4)}
            line(
                f"banking77 {args.few}/class mean",
                method_name,
                {**summary, "train_s": round(mean["train_s"], 1)},
                backend,
            )
            accs = np.array([r["accuracy"] for r in rows])
            print(f"#   accuracy sd {accs.std(ddof=1):.4f}, min {accs.min():.4f}, max {accs.max():.4f}")
    if len(backends) > 1:
        print(f"# accuracy difference to {backends[0]} (points)")
        first = {(r["dataset"], r["method"]): r["accuracy"] for r in results if r["backend"] == backends[0]}
        for r in results:
            if r["backend"] not in (None, backends[0]):
                delta = 100 * (r["accuracy"] - first[(r["dataset"], r["method"])])
                print(f"{r['dataset']:<18}{r['method']:<34}{r['backend']:>12}{delta:>+8.2f}")
    print(
        json.dumps(
            {
                "settings": {
                    "epochs": settings.train_epochs,
                    "lr": settings.train_learning_rate,
                    "batch": settings.train_batch_size,
                    "backends": backends,
                    "device": device,
                },
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
