"""Training runs: snapshot a task's labels, split a holdout, fit a head (and, when there are
enough labels, fine-tune the kind's encoder with sentence-transformers), evaluate, and promote
the new version only when it beats the active one on the same holdout.

A run is a row in training_runs; its result is a row in model_versions (the registry) and a
folder under SIFT_DATA_DIR/models/<version> with head.npz, meta.json and, when fine-tuned, the
encoder. Promoting a version that brings a new encoder does not activate it at once: a re-index
job (services/training/reindex.py) embeds the kind's events into a new collection first and switches the
kind's alias and the active version in one transaction at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services import metrics
from services.classify.serving import ActiveModels, Head, describe, get_task, label_defs
from services.config import Settings
from services.db.models import ClassTask, Event, KindEncoder, ModelVersion, TrainingRun
from services.embedding.encoder import Encoder
from services.errors import Conflict, InvalidInput, NotFound
from services.training import labels as label_repo

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
MIN_EXAMPLES_PER_LABEL = 2


@dataclass(frozen=True)
class Example:
    """A labeled text."""

    text: str
    label: str


@dataclass(frozen=True)
class Snapshot:
    """The labels a run trains and evaluates on, fixed when the run starts."""

    examples: list[Example]
    max_label_id: int
    digest: str

    def summary(self) -> dict[str, Any]:
        """What the registry keeps of it."""
        counts = Counter(e.label for e in self.examples)
        return {
            "labels": len(self.examples),
            "max_label_id": self.max_label_id,
            "digest": self.digest,
            "per_label": dict(sorted(counts.items())),
        }


@dataclass
class Outcome:
    """What a run produced."""

    version: str
    promoted: bool
    metrics: dict[str, Any]
    reindex_job: int | None = None
    notes: list[str] = field(default_factory=list)


# --- pure parts ---------------------------------------------------------------------------------


def take_snapshot(session: Session, *, task: str) -> Snapshot:
    """The task's labels in force now."""
    rows = label_repo.current(session, task=task)
    examples = [Example(r.text, r.label) for r in rows]
    digest = hashlib.sha256(json.dumps([[r.id, r.label] for r in rows]).encode()).hexdigest()[:16]
    return Snapshot(examples, max((r.id for r in rows), default=0), digest)


def split(
    examples: Sequence[Example], *, holdout: float, min_per_label: int = 1, salt: str = ""
) -> tuple[list[Example], list[Example]]:
    """A stratified, deterministic split. Each text's side is decided by a hash of the text: it is
    in the holdout when the hash, as a fraction of its range, is below `holdout`. So the same labels
    give the same split whatever their order, and a text keeps its side as labels are added. Within
    each label, when the hash leaves fewer than min_per_label texts in the holdout, the texts with
    the smallest hashes are moved there; a label with one text trains only."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    train: list[Example] = []
    test: list[Example] = []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda e: _hash_fraction(e, salt))
        if len(group) < MIN_EXAMPLES_PER_LABEL:
            train += group
            continue
        k = sum(1 for e in group if _hash_fraction(e, salt) < holdout)
        k = min(len(group) - 1, max(k, min_per_label))
        test += group[:k]
        train += group[k:]
    return train, test


def _hash_fraction(example: Example, salt: str = "") -> float:
    return int(hashlib.sha1((salt + example.text).encode()).hexdigest()[:12], 16) / float(16**12)


HEAD_CS = (0.25, 1.0, 4.0, 16.0, 64.0)


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


def fine_tune(
    base_path: str,
    train: Sequence[Example],
    *,
    out_dir: Path,
    settings: Settings,
    device: str,
    progress: Progress,
    unlabeled: Sequence[str] = (),
    deadline: float | None = None,
    after_texts: int = 0,
) -> tuple[dict[str, Any], Head]:
    """Fine-tune a copy of the encoder on the labeled texts with the sentence-transformers trainer;
    save it to out_dir/encoder. With unlabeled texts of the kind (a task with few labels per class),
    the confident predictions of the probe on them are added as pseudo-labels (self-training).
    Returns the report and the linear classifier trained with the encoder.

    Recipe (LP-FT): a linear probe is fit on the frozen embeddings first and initialises a linear
    classifier over the model's (normalised) sentence embedding; then encoder and classifier are
    trained together with cross-entropy. Measured against MultipleNegativesRanking and triplet
    losses in docs/benchmarks.md: better and faster on Banking77 and Financial PhraseBank.
    In self-training each label is repeated SIFT_TRAIN_LABEL_REPEATS times, for the probe that
    pseudo-labels as for the fine-tuning: a person's label outweighs a pseudo-label (measured in
    docs/benchmarks.md).
    Soup: with people's labels only (no self-training), SIFT_TRAIN_SOUP fine-tunings from the same
    start, with different seeds (data order, dropout), are averaged weight by weight into one
    encoder and classifier. The first gets the epochs wanted (or what fits, as below); each further
    one runs only when, at the pace the one before took, it ends in time; one the budget cuts off
    stays out. On FPB's dev folds two of them scored +0.45 points over one, and
    never below the members' mean; on Banking77's, level (docs/benchmarks.md).
    Time: the fine-tuning ends by `deadline` (time.monotonic(); default SIFT_TRAIN_BUDGET_S from
    now) less the time to encode `after_texts` texts at the rate measured on the probe's texts
    (what the run does after it: fit the head, evaluate). A training step is timed before the
    trainer starts, and on a machine too slow for the epochs wanted the epochs shrink to what the
    time allows (fit_epochs): the learning-rate schedule ends as planned instead of being cut off
    midway. Training still stops at that time if the steps turn out slower (budget_stopped)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    started = time.monotonic()
    deadline = started + settings.train_budget_s if deadline is None else deadline
    labeled = len(train)
    if unlabeled:
        train = [*train] * settings.train_label_repeats

    class Report(TrainerCallback):  # type: ignore[misc]
        stopped = False
        member = 0
        step_ends: ClassVar[list[float]] = []  # a new class, so a new list, per fine-tuning

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            progress("fine-tune", (Report.member + state.global_step / max(1, state.max_steps)) / members)
            Report.step_ends.append(now := time.monotonic())
            if now > stop_at:
                Report.stopped = True
                control.should_training_stop = True

    # fp32 weights on every device: on a GPU, mixed precision (bf16, or fp16 with loss scaling)
    # trains an fp32 master copy; fp16 weights cannot be unscaled by the AMP grad scaler.
    model = SentenceTransformer(base_path, device=device)
    model.max_seq_length = min(int(model.max_seq_length or 256), settings.max_seq_length, 128)
    classes = sorted({e.label for e in train})
    progress("linear probe", 0.0)
    encode_started = time.monotonic()
    vectors = np.asarray(model.encode([e.text for e in train], batch_size=64))
    texts_per_s = len(train) / max(1e-3, time.monotonic() - encode_started)
    probe = fit_head(vectors, [e.label for e in train], cs=(16.0,))
    pseudo = (
        pseudo_label(model.encode, probe, unlabeled, settings=settings, neighbours=settings.train_pseudo_neighbours)
        if unlabeled
        else []
    )
    examples = [*train, *pseudo]
    if pseudo:  # the probe that initialises the classifier sees what the classifier will be trained on
        more = np.asarray(model.encode([e.text for e in pseudo], batch_size=64))
        probe = fit_head(np.vstack([vectors, more]), [e.label for e in examples], cs=(16.0,))
    dataset = Dataset.from_dict(
        {"text": [e.text for e in examples], "label": [classes.index(e.label) for e in examples]}
    )
    precision = precision_args(device, bf16_supported=_bf16_supported(device))
    loss = probe_loss(model, probe, label_smoothing=settings.train_label_smoothing)
    stop_at = deadline - after_texts / texts_per_s
    wanted = epochs_for(len(examples), settings)
    step_s = seconds_per_step(loss, examples, classes, batch_size=settings.train_batch_size)
    members = 1 if unlabeled else settings.train_soup
    epochs = fit_epochs(
        wanted,
        examples=len(examples),
        batch_size=settings.train_batch_size,
        step_s=step_s,
        seconds=stop_at - time.monotonic(),
    )
    states: list[dict[str, Any]] = []
    member_s = 0.0
    for seed in range(members):
        if seed and time.monotonic() + member_s > stop_at:
            break  # another member would not end in time at the pace the last one took
        began = time.monotonic()
        if seed:  # every member starts from the base model and the same probe; only the seed differs
            model = SentenceTransformer(base_path, device=device)
            model.max_seq_length = loss.model.max_seq_length
            loss = probe_loss(model, probe, label_smoothing=settings.train_label_smoothing)
        Report.member = seed
        args = SentenceTransformerTrainingArguments(
            output_dir=str(out_dir / "checkpoints"),
            num_train_epochs=epochs,
            per_device_train_batch_size=settings.train_batch_size,
            learning_rate=settings.train_learning_rate,
            warmup_steps=0.1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            bf16=precision["bf16"],
            fp16=precision["fp16"],
            seed=seed,
            data_seed=seed,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[Report()]
        )
        trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout, which the CLI keeps for its JSON
        trainer.train()
        member_s = time.monotonic() - began
        if not (Report.stopped and states):  # a later member cut off by the budget stays out of the soup
            states.append({k: v.detach().clone() for k, v in loss.state_dict().items()})
        if Report.stopped:
            break
    loss.load_state_dict(averaged_state(states))
    model.save(str(out_dir / "encoder"))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    classifier = Head(
        probe.labels,
        loss.linear.weight.detach().float().cpu().numpy(),
        loss.linear.bias.detach().float().cpu().numpy(),
    )
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "budget_stopped": Report.stopped,
        "examples": labeled,
        "label_repeats": settings.train_label_repeats if unlabeled else 1,
        "pseudo_labeled": len(pseudo),
        "trained_on": len(examples),
        "epochs": round(epochs, 2),
        "epochs_wanted": round(wanted, 2),
        "step_s": round(step_s, 3),
        "step_s_seen": round(float(np.median(np.diff(Report.step_ends))), 3) if len(Report.step_ends) > 1 else None,
        "learning_rate": settings.train_learning_rate,
        "recipe": "lp-ft cross-entropy",
        "soup": len(states),
    }
    return report, classifier


def averaged_state(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean of state dicts of the same module (a uniform model soup); integer buffers (token
    type ids, position ids) are the same in every member and kept from the first."""
    import torch

    return {
        key: torch.stack([state[key] for state in states]).mean(0) if states[0][key].is_floating_point() else value
        for key, value in states[0].items()
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
    Measured on Banking77 with 10 labels per class (docs/benchmarks.md): the teacher's 6,200 most
    confident pseudo-labels go from 89.6 % to 91.1 % correct."""
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


def with_label_descriptions(
    train: Sequence[Example], descriptions: dict[str, str], settings: Settings
) -> list[Example]:
    """With few labels per class (SIFT_TRAIN_PSEUDO_BELOW), each label's description (or its name
    in words) joins the training examples: the label's name is evidence a handful of examples
    lacks (what tells "card_arrival" from "card_delivery_estimate")."""
    if not (settings.train_label_descriptions and _few_per_label(train, settings.train_pseudo_below)):
        return list(train)
    labels = sorted({e.label for e in train})
    return [*train, *(Example(descriptions.get(label) or describe(label), label) for label in labels)]


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


def epochs_for(examples: int, settings: Settings) -> float:
    """Enough epochs to see SIFT_TRAIN_MIN_EXAMPLES_SEEN examples, between the fewest and most."""
    wanted = settings.train_min_examples_seen / max(1, examples)
    return float(min(settings.train_max_epochs, max(settings.train_epochs, wanted)))


def fit_epochs(wanted: float, *, examples: int, batch_size: int, step_s: float, seconds: float) -> float:
    """`wanted` epochs, or fewer when `seconds` at step_s per training step of batch_size do not
    allow them (at least one step)."""
    steps = max(1, -(-int(examples * wanted) // batch_size))
    affordable = int(seconds / step_s) if step_s > 0 else steps
    if affordable >= steps:
        return wanted
    return max(1, affordable) * batch_size / max(1, examples)


def typical_batch(lengths: Sequence[int], batch_size: int, *, draws: int = 64) -> list[int]:
    """Indices of a batch like the trainer's: a batch is padded to its longest text, so of `draws`
    random batches (seeded) the one whose longest text is nearest the mean longest."""
    rng = np.random.default_rng(0)
    size = min(batch_size, len(lengths))
    batches = [rng.choice(len(lengths), size=size, replace=False) for _ in range(draws)]
    longest = np.array([max(lengths[i] for i in b) for b in batches])
    return sorted(int(i) for i in batches[int(np.argmin(np.abs(longest - longest.mean())))])


def seconds_per_step(loss: Any, examples: Sequence[Example], classes: Sequence[str], *, batch_size: int) -> float:
    """Wall time of one training step: forward and backward of a typical batch (typical_batch), in
    training mode, the fastest of 3 after a warm-up one (the first ones set up kernels and memory),
    plus a sixth for the optimizer step. Gradients are dropped afterwards, and the trainer seeds its
    random state when it is made, so nothing here changes the training. Without mixed precision,
    so on a GPU an overestimate."""
    import torch

    if not examples:
        return 0.0
    model = loss.model
    tokens = model.tokenizer([e.text for e in examples], truncation=True, max_length=model.max_seq_length)
    lengths = [len(ids) for ids in tokens["input_ids"]]
    sample = [examples[i] for i in typical_batch(lengths, batch_size)]
    features = {
        k: v.to(model.device) if isinstance(v, torch.Tensor) else v
        for k, v in model.preprocess([e.text for e in sample]).items()
    }
    target = torch.tensor([classes.index(e.label) for e in sample], device=model.device)
    loss.train()
    times = []
    for _ in range(4):
        began = time.perf_counter()
        loss([features], target).backward()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    loss.zero_grad(set_to_none=True)
    return min(times[1:]) * 7 / 6


def probe_loss(model: Any, probe: Head, *, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy of a linear classifier (initialised from the probe) over the model's sentence
    embedding. sentence-transformers has no single-text classification loss (its SoftmaxLoss
    classifies pairs), so this is the one small loss module Sift adds; pooling, normalisation and
    the training loop stay sentence-transformers'."""
    import torch
    from torch import nn
    from torch.nn import functional

    class ProbeLoss(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.linear = nn.Linear(probe.weights.shape[1], probe.weights.shape[0])
            with torch.no_grad():
                self.linear.weight.copy_(torch.from_numpy(np.asarray(probe.weights, dtype=np.float32)))
                self.linear.bias.copy_(torch.from_numpy(np.asarray(probe.bias, dtype=np.float32)))

        def forward(self, features: list[dict[str, Any]], labels: Any) -> Any:
            embedding = self.model(features[0])["sentence_embedding"]
            return functional.cross_entropy(self.linear(embedding), labels, label_smoothing=label_smoothing)

    return ProbeLoss().to(model.device)


def fine_tuned(
    train: Sequence[Example],
    *,
    unlabeled: Sequence[str],
    out_dir: Path,
    settings: Settings,
    device: str,
    progress: Progress,
    deadline: float | None = None,
    after_texts: int = 0,
) -> tuple[Encoder, Head, dict[str, Any]]:
    """Fine-tune an encoder and fit its head (deadline and after_texts: fine_tune; the head's
    encoding of the training texts is counted here). A share of the training labels
    (SIFT_TRAIN_HEAD_VALIDATION) is kept out of the fine-tuning to choose the head's C on
    embeddings that never saw it (choosing on texts the encoder was trained on favours a weakly
    regularised head); the head is then fit on every training label and averaged with the
    classifier trained with the encoder (head_after_fine_tune). With few labels per class
    (self-training) all of them go to the fine-tuning, and the head is the classifier trained
    with the encoder (head_after_fine_tune says why)."""
    fit, val = fine_tune_split(train, settings)
    report, classifier = fine_tune(
        settings.model_path,
        fit,
        out_dir=out_dir,
        settings=settings,
        device=device,
        progress=progress,
        unlabeled=unlabeled,
        deadline=deadline,
        after_texts=after_texts + len(train),
    )
    encoder = load_tuned(out_dir, settings=settings, device=device, backend=settings.encoder_backend)
    progress("head", 0.0)
    head, head_report = head_after_fine_tune(
        encoder, train, fit=fit, val=val, unlabeled=unlabeled, settings=settings, classifier=classifier
    )
    return encoder, head, {**report, **head_report}


def fine_tune_split(train: Sequence[Example], settings: Settings) -> tuple[list[Example], list[Example]]:
    """(texts the encoder is fine-tuned on, texts kept to choose the head's C). With few labels
    per class every label is worth more to the fine-tuning than to choosing C."""
    if _few_per_label(train, settings.train_pseudo_below):
        return list(train), []
    return split(train, holdout=settings.train_head_validation, salt="head-validation")


def load_tuned(out_dir: Path, *, settings: Settings, device: str, backend: str) -> Encoder:
    """The encoder fine_tune saved in out_dir, on backend (the head learns on the vectors serving
    will give it: SIFT_ENCODER_BACKEND)."""
    return Encoder.load(
        str(out_dir / "encoder"),
        device=device,
        max_seq_length=settings.max_seq_length,
        batch_size=settings.encode_batch_size,
        backend=backend,
        cache_dir=settings.onnx_cache_dir,
    )


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
    trained with the encoder; the two err on different texts, and the mean scored best on average
    over the dev folds of both FPB and Banking77 (docs/benchmarks.md). In self-training (few labels per class,
    unlabeled texts, no val) it is the classifier trained with the encoder on the labels and
    pseudo-labels: a head refit there can only choose its C on every 5th label or pseudo-label,
    which picks a weakly regularised head that learns the pseudo-labels' mistakes (Banking77, 10
    labels per class, docs/benchmarks.md: +0.45 points over 6 draws, 5 better)."""
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
        head, report["head"] = head.averaged_with(classifier), "refit, averaged with the fine-tuning's classifier"
    return head, report


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
    data set (docs/benchmarks.md)."""
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


def precision_args(device: str, *, bf16_supported: bool) -> dict[str, bool]:
    """Mixed precision for the trainer: bf16 where the GPU has it, else fp16; none on a CPU."""
    if not device.startswith("cuda"):
        return {"bf16": False, "fp16": False}
    return {"bf16": bf16_supported, "fp16": not bf16_supported}


def _bf16_supported(device: str) -> bool:
    import torch

    return device.startswith("cuda") and bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


# --- runs ------------------------------------------------------------------------------------


def new_run(session: Session, *, task: str, trigger: str = "api", now: datetime | None = None) -> TrainingRun:
    """Queue a run for a task (the caller sends it to a worker, or runs it in place)."""
    get_task(session, task)
    if task_has_open_run(session, task=task):
        raise Conflict(f"task {task!r} already has a run queued or running; wait for it (GET /v1/training/runs)")
    run = TrainingRun(
        id=str(uuid.uuid4()),
        task=task,
        status="queued",
        stage="queued",
        progress=0.0,
        trigger=trigger,
        label_count=0,
        max_label_id=0,
        promoted=False,
        metrics={},
        created_at=now or datetime.now(UTC),
    )
    session.add(run)
    session.flush()
    return run


def task_has_open_run(session: Session, *, task: str, stale_after_s: float = 3 * 3600) -> bool:
    """A run queued or running, started recently enough to be alive."""
    rows = session.scalars(
        select(TrainingRun).where(TrainingRun.task == task, TrainingRun.status.in_(("queued", "running")))
    )
    now = datetime.now(UTC)
    for run in rows:
        since = run.started_at or run.created_at
        if (now - (since if since.tzinfo else since.replace(tzinfo=UTC))).total_seconds() < stale_after_s:
            return True
    return False


def get_run(session: Session, *, run_id: str) -> TrainingRun:
    """A run by id, or NotFound."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"no training run with id {run_id!r}")
    return run


class Trainer:
    """Executes runs. Needs the database, the base encoder path and the served models (to
    evaluate the active version on the new holdout)."""

    def __init__(self, *, settings: Settings, sessions: Callable[[], Any], models: ActiveModels, device: str) -> None:
        self.settings = settings
        self.sessions = sessions
        self.models = models
        self.device = device

    def execute(self, run_id: str, *, progress: Progress | None = None) -> Outcome:
        """Run a queued run to the end; the run row says succeeded or failed (with the error).
        It ends within SIFT_TRAIN_BUDGET_S of now (the fine-tuning takes what the rest leaves)."""
        deadline = time.monotonic() + self.settings.train_budget_s
        started = datetime.now(UTC)
        with self.sessions() as session:
            run = get_run(session, run_id=run_id)
            if run.status in ("succeeded", "failed"):
                raise Conflict(f"run {run_id} already {run.status}")
            run.status, run.started_at, run.stage = "running", started, "snapshot"
            task = get_task(session, run.task)
            task_name, kind, fine_tune_allowed = task.name, task.kind, task.fine_tune
            descriptions = {d.name: d.description for d in label_defs(task)}
            snap = take_snapshot(session, task=task_name)
            run.label_count, run.max_label_id = len(snap.examples), snap.max_label_id
        report = self._reporter(run_id, progress)
        try:
            outcome = self._train(run_id, task_name, kind, fine_tune_allowed, snap, descriptions, report, deadline)
        except Exception as exc:
            log.exception("training run %s failed", run_id)
            with self.sessions() as session:
                run = get_run(session, run_id=run_id)
                run.status, run.error, run.finished_at = (
                    "failed",
                    f"{type(exc).__name__}: {exc}"[:2000],
                    datetime.now(UTC),
                )
            metrics.TRAINING_RUNS.labels(task=task_name, outcome="failed").inc()
            raise
        with self.sessions() as session:
            run = get_run(session, run_id=run_id)
            run.status, run.stage, run.progress = "succeeded", "done", 1.0
            run.model_version, run.promoted, run.metrics = outcome.version, outcome.promoted, outcome.metrics
            run.finished_at = datetime.now(UTC)
        metrics.TRAINING_RUNS.labels(task=task_name, outcome="promoted" if outcome.promoted else "rejected").inc()
        return outcome

    def _reporter(self, run_id: str, progress: Progress | None) -> Progress:
        last = [0.0]

        def report(stage: str, fraction: float) -> None:
            if progress is not None:
                progress(stage, fraction)
            now = time.monotonic()
            if now - last[0] < 2.0 and fraction < 1.0:
                return
            last[0] = now
            with self.sessions() as session:
                session.execute(
                    update(TrainingRun).where(TrainingRun.id == run_id).values(stage=stage, progress=round(fraction, 4))
                )

        return report

    def _train(
        self,
        run_id: str,
        task: str,
        kind: str,
        fine_tune_allowed: bool,
        snap: Snapshot,
        descriptions: dict[str, str],
        report: Progress,
        deadline: float,
    ) -> Outcome:
        s = self.settings
        counts = Counter(e.label for e in snap.examples)
        usable = [label for label, n in counts.items() if n >= MIN_EXAMPLES_PER_LABEL]
        if len(usable) < 2:
            raise InvalidInput(
                f"task {task!r} needs at least 2 labels with {MIN_EXAMPLES_PER_LABEL}+ examples each to train; "
                f"it has {dict(counts)}"
            )
        train, holdout = split(snap.examples, holdout=s.train_holdout, min_per_label=s.train_min_holdout_per_label)
        report("split", 1.0)
        version = f"{task}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        out_dir = s.models_dir / version
        out_dir.mkdir(parents=True, exist_ok=True)
        serving = self.models.for_kind(kind)
        notes: list[str] = []
        metrics: dict[str, Any] = {"train": len(train), "holdout": len(holdout)}
        t0 = time.monotonic()
        unlabeled = self._unlabeled(kind, snap) if _few_per_label(train, s.train_pseudo_below) else []
        enough_to_fine_tune = len(train) >= s.train_fine_tune_min_labels  # people's labels, not descriptions
        examples = with_label_descriptions(train, descriptions, s)
        metrics["description_examples"] = len(examples) - len(train)
        if fine_tune_allowed and enough_to_fine_tune:
            encoder, head, metrics["fine_tune"] = fine_tuned(
                examples,
                unlabeled=unlabeled,
                out_dir=out_dir,
                settings=s,
                device=self.device,
                progress=report,
                deadline=deadline,
                after_texts=2 * len(holdout),  # the new version and the active one evaluated
            )
            encoder.version = version
            tuned_path: str | None = str(out_dir / "encoder")
        else:
            if fine_tune_allowed:
                notes.append(f"head only: {len(train)} training labels < SIFT_TRAIN_FINE_TUNE_MIN_LABELS")
            tuned_path, encoder = None, serving.encoder
            report("head", 0.0)
            head, metrics["head_pseudo_labeled"] = train_head(encoder.encode, examples, unlabeled=unlabeled, settings=s)
        metrics["train_seconds"] = round(time.monotonic() - t0, 1)
        report("evaluate", 0.0)
        new = evaluate(head, encoder.encode([e.text for e in holdout]), [e.label for e in holdout])
        baseline_version, baseline = self._baseline(task, kind, holdout)
        metrics.update(new)
        metrics["baseline"] = {"version": baseline_version, **baseline}
        # Against an active version the new one must win by the margin; against zero-shot, a
        # head trained on people's labels is preferred at equal accuracy.
        margin = s.train_promote_margin if baseline_version is not None else 0.0
        promoted = new["accuracy"] >= baseline["accuracy"] + margin
        if not promoted:
            against = baseline_version or "zero-shot"
            notes.append(
                f"not promoted: accuracy {new['accuracy']} < {against} {baseline['accuracy']} + margin {margin}"
            )
        head.save(out_dir)
        meta = {
            "version": version,
            "task": task,
            "kind": kind,
            "labels": list(head.labels),
            "metrics": metrics,
            "snapshot": snap.summary(),
            "encoder": tuned_path or "serving",
        }
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
        reindex_job = None
        with self.sessions() as session:
            row = ModelVersion(
                version=version,
                task=task,
                kind=kind,
                status="candidate",
                encoder_version=encoder.version,
                artifact_path=str(out_dir),
                labels=list(head.labels),
                snapshot=snap.summary(),
                metrics=metrics,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.flush()
            if promoted:
                reindex_job = activate(session, version=version, settings=s)
            else:
                row.status = "rejected"
        report("done", 1.0)
        metrics["notes"] = notes
        return Outcome(version, promoted, metrics, reindex_job, notes)

    def _unlabeled(self, kind: str, snap: Snapshot) -> list[str]:
        """Texts of the kind's events that carry no label of this snapshot (up to SIFT_TRAIN_PSEUDO_MAX)."""
        labeled = {e.text for e in snap.examples}
        with self.sessions() as session:
            rows = session.scalars(
                select(Event).where(Event.kind == kind).order_by(Event.id).limit(self.settings.train_pseudo_max * 2)
            )
            texts = [label_repo.text_of(row) for row in rows]
        return list(dict.fromkeys(t for t in texts if t not in labeled))[: self.settings.train_pseudo_max]

    def _baseline(self, task: str, kind: str, holdout: Sequence[Example]) -> tuple[str | None, dict[str, float]]:
        """The active version of the task (or its zero-shot head) scored on the new holdout."""
        with self.sessions() as session:
            active = session.scalar(
                select(ModelVersion).where(ModelVersion.task == task, ModelVersion.status == "active")
            )
            active_info = (active.version, active.encoder_version, active.artifact_path) if active else None
        texts, gold = [e.text for e in holdout], [e.label for e in holdout]
        if active_info is not None:
            version, encoder_version, path = active_info
            encoder = self.models.encoder(encoder_version, encoder_path(path))
            return version, evaluate(Head.load(Path(path)), encoder.encode(texts), gold)
        serving = self.models.for_kind(kind)
        for name, head, _, _ in serving.heads:
            if name == task:  # zero-shot: a trained head must beat it
                return None, evaluate(head, serving.encoder.encode(texts), gold)
        return None, {"accuracy": 0.0, "macro_f1": 0.0, "n": len(gold)}


def _few_per_label(train: Sequence[Example], below: int) -> bool:
    counts = sorted(Counter(e.label for e in train).values())
    return bool(counts) and counts[len(counts) // 2] < below


def encoder_path(artifact_path: str) -> str | None:
    """The fine-tuned encoder of a version, if it has one."""
    path = Path(artifact_path) / "encoder"
    return str(path) if path.is_dir() else None


# --- registry ----------------------------------------------------------------------------------


def get_version(session: Session, *, version: str) -> ModelVersion:
    """A model version, or NotFound."""
    row = session.get(ModelVersion, version)
    if row is None:
        raise NotFound(f"no model version {version!r}; see GET /v1/models")
    return row


def list_versions(session: Session, *, task: str | None = None) -> list[ModelVersion]:
    """Model versions, newest first."""
    stmt = select(ModelVersion).order_by(ModelVersion.created_at.desc())
    if task:
        stmt = stmt.where(ModelVersion.task == task)
    return list(session.scalars(stmt))


def activate(session: Session, *, version: str, settings: Settings) -> int | None:
    """Make a version the active one of its task (promotion or rollback). When it needs another
    encoder than the one the kind is embedded with now, start a re-index job and return its id:
    the switch happens when the job is done. Otherwise switch now and return None."""
    from services.training.reindex import current_encoder, start_job

    row = session.get(ModelVersion, version)
    if row is None:
        raise NotFound(f"no model version {version!r}; see GET /v1/models")
    if row.status == "active":
        return None
    if row.encoder_version == current_encoder(session, kind=row.kind, settings=settings):
        switch_active(session, version=row)
        return None
    row.status = "reindexing"
    return start_job(session, version=row, settings=settings)


def switch_active(session: Session, *, version: ModelVersion) -> None:
    """Retire the task's active version and activate this one (one transaction)."""
    now = datetime.now(UTC)
    session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.task == version.task, ModelVersion.status == "active", ModelVersion.version != version.version
        )
        .values(status="retired")
    )
    version.status, version.activated_at = "active", now
    session.flush()


def due_tasks(session: Session, *, min_new_labels: int) -> list[str]:
    """Tasks with at least min_new_labels labels since their last run's snapshot, and tasks whose
    active head was trained on another encoder than the kind's current one."""
    due = []
    encoders = {row.kind: row.encoder_version for row in session.scalars(select(KindEncoder))}
    for task in session.scalars(select(ClassTask).order_by(ClassTask.name)):
        last = session.scalar(
            select(TrainingRun)
            .where(TrainingRun.task == task.name, TrainingRun.status == "succeeded")
            .order_by(TrainingRun.created_at.desc())
            .limit(1)
        )
        after = last.max_label_id if last else 0
        stale = False
        active = session.scalar(
            select(ModelVersion).where(ModelVersion.task == task.name, ModelVersion.status == "active")
        )
        if active is not None and task.kind in encoders and active.encoder_version != encoders[task.kind]:
            stale = label_repo.new_since(session, task=task.name, after_id=0) > 0
        if (
            stale or label_repo.new_since(session, task=task.name, after_id=after) >= min_new_labels
        ) and not task_has_open_run(session, task=task.name):
            due.append(task.name)
    return due
