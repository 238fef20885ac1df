"""Classification heads on an encoder's vectors: logistic regression with its C chosen on held-out
labels, self-training with pseudo-labels, evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from services.classify.head import Head
from services.config import Settings
from services.embedding.encoder import Encoder
from services.training.dataset import Example

HEAD_CS = (0.25, 1.0, 4.0, 16.0, 64.0)
HEAD_PULL = 0.01  # refit_anchored's pull of the classifier's weights to where the fine-tuning left them


def fit_head(vectors: np.ndarray, labels: Sequence[str], *, cs: Sequence[float] = HEAD_CS) -> Head:
    """Multinomial logistic regression on unit vectors. Its inverse regularisation C is chosen on
    every 5th training example (fine-tuned embeddings want a smaller C than frozen ones), then
    the head is refit on all of them."""
    from sklearn.linear_model import LogisticRegression

    classes = sorted(set(labels))
    y = np.array([classes.index(x) for x in labels])
    c = cs[0] if len(cs) == 1 else choose_c(vectors, y, cs)
    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit(vectors, y)
    return Head.from_logistic(classes, clf.coef_, clf.intercept_)


def choose_c(vectors: np.ndarray, y: np.ndarray, cs: Sequence[float]) -> float:
    """The C with the best accuracy on every 5th example, trained on the rest (ties: smaller C)."""
    from sklearn.linear_model import LogisticRegression

    held = np.arange(len(y)) % 5 == 4
    if held.sum() < 10 or len(set(y[~held].tolist())) < len(set(y.tolist())):
        return 16.0
    scores = []
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=3000).fit(vectors[~held], y[~held])
        scores.append(float((clf.predict(vectors[held]) == y[held]).mean()))
    return cs[int(np.argmax(scores))]


def evaluate(head: Head, vectors: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (over the labels present in the holdout)."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted = head.predict(vectors) if len(vectors) else []
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4) if labels else 0.0,
        "macro_f1": round(float(f1_score(labels, predicted, average="macro", labels=sorted(set(labels)))), 4)
        if labels
        else 0.0,
        "n": len(labels),
    }


def pseudo_label(
    encode: Callable[[list[str]], Any], head: Head, texts: Sequence[str], *, settings: Settings, neighbours: int = 0
) -> list[Example]:
    """The head's confident predictions on unlabeled texts: probability at least
    SIFT_TRAIN_PSEUDO_MIN_PROB, and at least twice the uniform 1/labels (at most 0.9). With
    neighbours, each text's probabilities are first averaged with its nearest unlabeled texts'
    (neighbour_smoothed): similar texts mostly share an intent, so a text the head is unsure of
    borrows its neighbours' evidence."""
    vectors = np.asarray(encode(list(texts)))
    probs = head.probs(vectors)
    if neighbours:
        probs = neighbour_smoothed(vectors, probs, k=neighbours)
    threshold = max(settings.train_pseudo_min_prob, min(0.9, 2.0 / len(head.labels)))
    best = probs.argmax(axis=1)
    return [Example(text, head.labels[int(best[i])]) for i, text in enumerate(texts) if probs[i, best[i]] >= threshold]


def neighbour_smoothed(
    vectors: np.ndarray, probs: np.ndarray, *, k: int, weight: float = 0.5, rounds: int = 3, chunk: int = 1024
) -> np.ndarray:
    """Label smoothing over the k-nearest-neighbour graph of unit vectors (cosine): each round,
    q = (1 - weight) * p + weight * mean of q over the k nearest other texts, starting from q = p.
    On Banking77 with 10 labels per class it takes the teacher's confident pseudo-labels from 6,228
    at 89.5 % correct to 6,497 at 90.2 % (docs/decisions/fine-tuning-recipe.md)."""
    n = len(vectors)
    k = min(k, n - 1)
    if k < 1:
        return probs
    nearest = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):  # never the full n x n similarity matrix
        sims = vectors[start : start + chunk] @ vectors.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        nearest[start : start + chunk] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    smoothed = probs
    for _ in range(rounds):
        smoothed = (1 - weight) * probs + weight * smoothed[nearest].mean(axis=1)
    return smoothed


def train_head(
    encode: Callable[[list[str]], Any],
    train: Sequence[Example],
    *,
    unlabeled: Sequence[str],
    settings: Settings,
    cs: Sequence[float] = HEAD_CS,
) -> tuple[Head, int]:
    """The task's head on an encoder: fit on the labels; with unlabeled texts (self-training), refit
    on the labels plus the first head's confident predictions. Returns the head and how many
    pseudo-labels it saw."""
    vectors = np.asarray(encode([e.text for e in train]))
    head = fit_head(vectors, [e.label for e in train], cs=cs)
    if not unlabeled:
        return head, 0
    pseudo = pseudo_label(encode, head, unlabeled, settings=settings)
    if not pseudo:
        return head, 0
    more = np.asarray(encode([e.text for e in pseudo]))
    labels = [e.label for e in train] + [e.label for e in pseudo]
    return fit_head(np.vstack([vectors, more]), labels, cs=cs), len(pseudo)


def head_after_fine_tune(
    encoder: Encoder,
    train: Sequence[Example],
    *,
    fit: Sequence[Example],
    val: Sequence[Example],
    unlabeled: Sequence[str],
    settings: Settings,
    classifier: Head,
) -> tuple[Head, dict[str, Any]]:
    """The head of a fine-tuned encoder. With people's labels kept out of the fine-tuning (val):
    a head refit on all of train, its C chosen on val, averaged (logits) with the classifier
    trained with the encoder, itself first refit on all of train near its weights
    (refit_anchored); the two err on different texts, and the mean scored best on average
    over the dev folds of both FPB and Banking77 (docs/decisions/head-rule.md). In self-training
    (few labels per class, unlabeled texts, no val) it is the classifier trained with the encoder on the labels and
    pseudo-labels: a head refit there can only choose its C on every 5th label or pseudo-label,
    which picks a weakly regularised head that learns the pseudo-labels' mistakes (Banking77, 10
    labels per class, docs/decisions/head-rule.md: +0.45 points over 6 draws, 5 better)."""
    if unlabeled and not val:
        return classifier, {"head_pseudo_labeled": 0, "head_c": "the fine-tuning's classifier (self-training)"}
    encode = remembered(encoder.encode)  # C is chosen on the texts the head is then fit on
    cs = (choose_c_on(encode, fit, val),) if val else HEAD_CS
    head, pseudo = train_head(encode, train, unlabeled=unlabeled, settings=settings, cs=cs)
    report: dict[str, Any] = {
        "head_pseudo_labeled": pseudo,
        "head_c": cs[0] if len(cs) == 1 else "chosen on every 5th training label",
        "head": "refit",
    }
    if val and head.labels == classifier.labels:  # a label only in val leaves the classifier without it
        classifier = refit_anchored(classifier, encode([e.text for e in train]), [e.label for e in train])
        head, report["head"] = head.averaged_with(classifier), "refit, averaged with the fine-tuning's classifier refit"
    return head, report


def refit_anchored(head: Head, vectors: np.ndarray, labels: Sequence[str], *, pull: float = HEAD_PULL) -> Head:
    """head refit on every label: mean cross-entropy plus pull / 2 * ||W - W_head||^2, its bias free.
    The classifier trained with the encoder saw only the fine-tuning's labels, with label
    smoothing; refit so, it also learns from the labels kept out and gets a bias fit to the
    plain labels, while its weights stay near the fine-tuning's (docs/decisions/head-rule.md)."""
    from scipy.optimize import minimize

    k, dim = head.weights.shape
    x, w0 = np.asarray(vectors, dtype=np.float64), np.asarray(head.weights, dtype=np.float64)
    onehot = np.eye(k)[[head.labels.index(label) for label in labels]]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: k * dim].reshape(k, dim), theta[k * dim :]
        logits = x @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        grad = (np.exp(log_p) - onehot) / len(x)
        value = -float((onehot * log_p).sum()) / len(x) + pull / 2 * float(((w - w0) ** 2).sum())
        return value, np.concatenate([(grad.T @ x + pull * (w - w0)).ravel(), grad.sum(axis=0)])

    start = np.concatenate([w0.ravel(), np.asarray(head.bias, dtype=np.float64)])
    theta = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return Head(head.labels, theta[: k * dim].reshape(k, dim).astype(np.float32), theta[k * dim :].astype(np.float32))


def remembered(encode: Callable[[list[str]], Any]) -> Callable[[list[str]], np.ndarray]:
    """encode, computing each distinct text's vector once."""
    memo: dict[str, np.ndarray] = {}

    def cached(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            memo.update(zip(new, np.asarray(encode(new)), strict=True))
        return np.stack([memo[t] for t in texts]) if texts else np.asarray(encode([]))

    return cached


def choose_c_on(encode: Callable[[list[str]], Any], fit: Sequence[Example], val: Sequence[Example]) -> float:
    """The C whose head, fit on `fit`, has the lowest log-loss on `val` (ties: the smaller C).
    Log-loss rather than accuracy: on a few hundred texts the accuracies of neighbouring Cs differ
    by a text or two and the choice flips from run to run (FPB's holdout: C = 1 on one run, 64 on
    another); log-loss also weighs how sure the head is, and chose one C on every dev fold of a
    data set (docs/decisions/head-rule.md)."""
    from sklearn.linear_model import LogisticRegression

    if not val:
        return 16.0
    classes = sorted({e.label for e in fit} | {e.label for e in val})
    x, xv = np.asarray(encode([e.text for e in fit])), np.asarray(encode([e.text for e in val]))
    y, yv = np.array([classes.index(e.label) for e in fit]), np.array([classes.index(e.label) for e in val])
    scores = []
    for c in HEAD_CS:
        model = LogisticRegression(C=c, max_iter=3000).fit(x, y)
        probs = np.zeros((len(xv), len(classes)))
        probs[:, model.classes_] = model.predict_proba(xv)  # a label missing from fit: probability 0
        scores.append(float(-np.log(np.maximum(probs[np.arange(len(yv)), yv], 1e-12)).mean()))  # log-loss
    return HEAD_CS[int(np.argmin(scores))]
