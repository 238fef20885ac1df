"""How a run judges a version: on a holdout where labels are plentiful, by k-fold
cross-validation where they are few, so that every label trains the version that ships.

With few labels per class (the median label under SIFT_TRAIN_KFOLD_BELOW examples) a fifth of
them kept out is a fifth less for the model that ships, and 20 % of 770 labels scores a version
on about 150 texts anyway (a standard error of 3 points). There the run trains on every label and
estimates by SIFT_TRAIN_KFOLD folds: for each fold, a logistic-regression head fit on the other
folds' vectors of the version's encoder is scored on the fold. The serving version is scored the
same way (its encoder, the same folds, the same labels), so promotion compares like with like.
When the version's encoder was fine-tuned on these labels the estimate is optimistic as an
accuracy (the metrics say so); it is the same measure for both sides of the comparison.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from services.config import Settings
from services.training.dataset import Example, few_per_label, split
from services.training.heads import evaluate, fit_head

KFOLD_C = 16.0  # the linear probe's C: a per-fold search would multiply the folds' cost


def uses_kfold(examples: Sequence[Example], settings: Settings) -> bool:
    """True when labels are few enough that the run trains on all of them and estimates by k-fold."""
    return settings.train_kfold > 1 and few_per_label(examples, settings.train_kfold_below)


def split_for_run(examples: Sequence[Example], settings: Settings) -> tuple[list[Example], list[Example], bool]:
    """(training labels, holdout, k-fold?): every label and no holdout when labels are few."""
    if uses_kfold(examples, settings):
        return list(examples), [], True
    train, holdout = split(examples, holdout=settings.train_holdout, min_per_label=settings.train_min_holdout_per_label)
    return train, holdout, False


def folds(examples: Sequence[Example], k: int) -> np.ndarray:
    """Each example's fold (0..k-1), stratified and deterministic: within each label, texts in the
    order of a hash of the text are dealt to the folds in turn."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_label[example.label].append(i)
    out = np.zeros(len(examples), dtype=np.int64)
    for label in sorted(by_label):
        ordered = sorted(by_label[label], key=lambda i: hashlib.sha1(examples[i].text.encode()).hexdigest())
        for rank, i in enumerate(ordered):
            out[i] = rank % k
    return out


def kfold_scores(
    encode: Callable[[list[str]], Any], examples: Sequence[Example], fold_of: np.ndarray
) -> dict[str, Any]:
    """Out-of-fold accuracy and macro-F1 of a head on encode's vectors (each text predicted by a
    head that never saw its label), with the folds' accuracies and their standard error."""
    vectors = np.asarray(encode([e.text for e in examples]))
    gold = [e.label for e in examples]
    predicted: list[str] = [""] * len(examples)
    per_fold = []
    for fold in sorted(set(fold_of.tolist())):
        held = fold_of == fold
        fit_labels = [g for g, h in zip(gold, held, strict=True) if not h]
        if not held.any() or len(set(fit_labels)) < 2:  # fewer texts of every label than folds
            continue
        head = fit_head(vectors[~held], fit_labels, cs=(KFOLD_C,))
        guesses = head.predict(vectors[held])
        idx = np.flatnonzero(held)
        for i, guess in zip(idx, guesses, strict=True):
            predicted[int(i)] = guess
        per_fold.append(float(np.mean([guesses[j] == gold[int(i)] for j, i in enumerate(idx)])))
    scored = [i for i, p in enumerate(predicted) if p]
    result = _scores([gold[i] for i in scored], [predicted[i] for i in scored])
    se = float(np.std(per_fold, ddof=1) / math.sqrt(len(per_fold))) if len(per_fold) > 1 else None
    return {**result, "folds": [round(a, 4) for a in per_fold], "se": round(se, 4) if se is not None else None}


def _scores(gold: list[str], predicted: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro", labels=sorted(set(gold)))), 4),
        "n": len(gold),
    }


def holdout_scorer(holdout: Sequence[Example]) -> Callable[[Any, Any], dict[str, Any]]:
    """Score a version (encoder, head) on the holdout, with the binomial standard error."""
    texts, gold = [e.text for e in holdout], [e.label for e in holdout]

    def score(encoder: Any, head: Any) -> dict[str, Any]:
        result: dict[str, Any] = dict(evaluate(head, encoder.encode(texts), gold))
        n, p = len(gold), result["accuracy"]
        result["se"] = round(math.sqrt(p * (1 - p) / n), 4) if n else None
        return result

    return score


def kfold_scorer(examples: Sequence[Example], k: int) -> Callable[[Any, Any], dict[str, Any]]:
    """Score a version by k-fold heads on its encoder (its own head is not used: each fold fits one)."""
    fold_of = folds(examples, k)
    return lambda encoder, _head: kfold_scores(encoder.encode, examples, fold_of)


def estimate_method(kfold: bool, k: int, *, fine_tuned: bool) -> dict[str, Any]:
    """What the run's accuracy is, in words, for its metrics."""
    if not kfold:
        return {"method": "holdout", "trained_on_every_label": False}
    method = f"{k}-fold: a logistic-regression head per fold on the version's encoder, scored on the fold"
    return {
        "method": method,
        "k": k,
        "trained_on_every_label": True,
        "optimistic": fine_tuned,
        "note": "the encoder was fine-tuned on these labels; the serving version is scored the same way"
        if fine_tuned
        else "the encoder never saw these labels",
    }
