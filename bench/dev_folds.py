"""Compare a training change on dev folds carved from the training part, never the holdout.

    python bench/dev_folds.py ../shared/data fpb --folds 0,1,2
    SIFT_TRAIN_LEARNING_RATE=1e-4 python bench/dev_folds.py ../shared/data fpb --folds 0,1,2
    python bench/dev_folds.py ../shared/data banking77 --folds 0,1 --few 10

The holdout (services.training.dataset.split, as in bench/quality.py) is set aside first; fold k is then
`split(train, holdout=0.14, salt=f"dev{k}")` of the rest. With --few N, N labels per class are
drawn from the rest (numpy seed k + 1) and the other texts are the unlabeled pool, as a run with
few labels per class reads its kind's unlabeled events. A change is a SIFT_* setting in the
environment; run once with and once without it, and compare fold by fold.

Each fold fine-tunes once on the code path of a run (fine_tune, then head_after_fine_tune) and
prints one JSON line with dev accuracy of: `head`, the head a run would keep, and `classifier`,
the linear classifier trained with the encoder; and the fine-tuning's epochs and seconds.
bench/quality.py gives the figures for docs/benchmarks.md; this is for choosing between changes
without looking at the holdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ["HF_HUB_OFFLINE"] = "1"

import quality  # noqa: E402

from services.classify import tasks  # noqa: E402
from services.classify.head import Head  # noqa: E402
from services.config import Settings  # noqa: E402
from services.embedding.encoder import Encoder, resolve_device, set_threads  # noqa: E402
from services.training import (  # noqa: E402
    dataset,
    heads,
    tuning,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder (banking77/, fpb/)")
    parser.add_argument("dataset", choices=["banking77", "fpb"])
    parser.add_argument("--folds", default="0,1,2", help="dev folds (salts dev0, dev1, ...)")
    parser.add_argument("--few", type=int, default=0, help="labels per class drawn from the rest (0: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--save", type=Path, help="write each fold's fine-tuned vectors here, to try heads on")
    args = parser.parse_args()
    settings = Settings()
    set_threads(settings.threads_for_this_process())
    device = resolve_device(args.device)
    examples = quality.load(args.data / args.dataset / "train.csv")
    train, _holdout = dataset.split(examples, holdout=0.2)  # the holdout is never read below
    descriptions = (
        quality.SENTIMENT if args.dataset == "fpb" else {x: tasks.describe(x) for x in {e.label for e in examples}}
    )
    for fold in (int(k) for k in args.folds.split(",")):
        rest, dev = dataset.split(train, holdout=0.14, salt=f"dev{fold}")
        unlabeled: list[str] = []
        if args.few:
            chosen = quality.few_per_label(rest, args.few, fold + 1)
            picked = set(chosen)
            unlabeled, rest = [e.text for e in rest if e not in picked], chosen
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            labeled = dataset.with_label_descriptions(rest, descriptions, settings)
            fit, val = dataset.fine_tune_split(labeled, settings)
            report, classifier = tuning.fine_tune(
                settings.model_path,
                fit,
                out_dir=Path(tmp),
                settings=settings,
                device=device,
                progress=lambda *_: None,
                unlabeled=unlabeled,
            )
            encoder = tuning.load_tuned(Path(tmp), settings=settings, device=device, backend=settings.encoder_backend)
            head, head_report = heads.head_after_fine_tune(
                encoder, labeled, fit=fit, val=val, unlabeled=unlabeled, settings=settings, classifier=classifier
            )
            vectors, gold = np.asarray(encoder.encode([e.text for e in dev])), [e.label for e in dev]
            if args.save:
                _save(args.save / f"{args.dataset}-{fold}.npz", encoder, labeled, fit, dev, vectors, classifier)
            result = {
                "dataset": args.dataset,
                "fold": fold,
                "few": args.few,
                "dev": len(dev),
                "lr": settings.train_learning_rate,
                "epochs": report["epochs"],
                "soup": report["soup"],
                "seconds": round(time.perf_counter() - started),
                "head": heads.evaluate(head, vectors, gold)["accuracy"],
                "head_c": head_report["head_c"],
                "classifier": heads.evaluate(classifier, vectors, gold)["accuracy"],
            }
        print(json.dumps(result), flush=True)


def _save(
    path: Path,
    encoder: Encoder,
    labeled: list[dataset.Example],
    fit: list[dataset.Example],
    dev: list[dataset.Example],
    dev_vectors: np.ndarray,
    classifier: Head,
) -> None:
    """The fold's fine-tuned vectors of the run's labels and of dev, which of the labels the
    fine-tuning saw (fit), and the classifier trained with the encoder: heads can then be tried
    in seconds without fine-tuning again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    in_fit = {(e.text, e.label) for e in fit}
    np.savez(
        path,
        train_vectors=np.asarray(encoder.encode([e.text for e in labeled])),
        train_texts=np.array([e.text for e in labeled], dtype=object),
        train_labels=np.array([e.label for e in labeled], dtype=object),
        in_fit=np.array([(e.text, e.label) in in_fit for e in labeled]),
        dev_vectors=dev_vectors,
        dev_texts=np.array([e.text for e in dev], dtype=object),
        dev_labels=np.array([e.label for e in dev], dtype=object),
        classifier_labels=np.array(classifier.labels, dtype=object),
        classifier_weights=classifier.weights,
        classifier_bias=classifier.bias,
    )


if __name__ == "__main__":
    main()
