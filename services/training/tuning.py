"""Fine-tuning an encoder with the sentence-transformers trainer (LP-FT cross-entropy, a soup of
seeds, a time budget), and the head fit on the fine-tuned encoder.

Recipe (LP-FT): a linear probe is fit on the frozen embeddings first and initialises a linear
classifier over the model's (normalised) sentence embedding; then encoder and classifier are
trained together with cross-entropy (docs/decisions/fine-tuning-recipe.md). In self-training
each label is repeated SIFT_TRAIN_LABEL_REPEATS times, for the probe that pseudo-labels as for
the fine-tuning: a person's label outweighs a pseudo-label (docs/decisions/label-repeats.md).
Soup: with people's labels only (no self-training), SIFT_TRAIN_SOUP fine-tunings from the same
start, with different seeds (data order, dropout), are averaged weight by weight into one
encoder and classifier (docs/decisions/fine-tuning-soup.md). The first gets the epochs wanted
(or what fits, as below); each further one runs only when, at the pace the one before took, it
ends in time; one the budget cuts off stays out.
Time (fine_tune): the fine-tuning ends by `deadline` (time.monotonic(); default SIFT_TRAIN_BUDGET_S from
now) less the time to encode `after_texts` texts at the rate measured on the probe's texts
(what the run does after it: fit the head, evaluate). A training step is timed before the
trainer starts, and on a machine too slow for the epochs wanted the epochs shrink to what the
time allows (fit_epochs): the learning-rate schedule ends as planned instead of being cut off
midway. Training still stops at that time if the steps turn out slower (budget_stopped).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.classify.head import Head
from services.config import Settings
from services.embedding.encoder import Encoder
from services.training.batches import sampler_factory
from services.training.budget import epochs_for, fit_epochs, seconds_per_step, token_lengths
from services.training.dataset import Example, fine_tune_split
from services.training.heads import fit_head, head_after_fine_tune, pseudo_label

Progress = Callable[[str, float], None]


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

    Stages: load the base model, fit the linear probe (and pseudo-label), plan the epochs in the
    time left, train the members of the soup, average and save them."""
    started = time.monotonic()
    deadline = started + settings.train_budget_s if deadline is None else deadline
    labeled = len(train)
    if unlabeled:
        train = [*train] * settings.train_label_repeats
    model = _base_model(base_path, settings=settings, device=device)
    progress("linear probe", 0.0)
    probed = _probe(model, train, unlabeled=unlabeled, settings=settings)
    plan = _plan(
        model, probed, settings=settings, stop_at=deadline - after_texts / probed.texts_per_s, soup=not unlabeled
    )
    loss, clock = _train_members(
        base_path, model, probed, plan, out_dir=out_dir, settings=settings, device=device, progress=progress
    )
    model.save(str(out_dir / "encoder"))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    classifier = Head(
        probed.probe.labels,
        loss.linear.weight.detach().float().cpu().numpy(),
        loss.linear.bias.detach().float().cpu().numpy(),
    )
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "budget_stopped": clock.stopped,
        "examples": labeled,
        "label_repeats": settings.train_label_repeats if unlabeled else 1,
        "pseudo_labeled": len(probed.pseudo),
        "trained_on": len(probed.examples),
        "epochs": round(plan.epochs, 2),
        "epochs_wanted": round(plan.wanted, 2),
        "step_s": round(plan.step_s, 3),
        "step_s_seen": round(float(np.median(np.diff(clock.step_ends))), 3) if len(clock.step_ends) > 1 else None,
        "learning_rate": settings.train_learning_rate,
        "recipe": "lp-ft cross-entropy",
        "soup": clock.members_kept,
    }
    return report, classifier


@dataclass
class _Probed:
    """The linear probe and what the fine-tuning trains on (people's labels and pseudo-labels)."""

    probe: Head
    pseudo: list[Example]
    examples: list[Example]
    classes: list[str]
    texts_per_s: float


@dataclass
class _Plan:
    """How long the fine-tuning trains: epochs per member, members at most, and when it stops."""

    epochs: float
    wanted: float
    step_s: float
    members: int
    stop_at: float
    loss: Any
    lengths: list[int]  # each example's tokens, for batches of texts of about one length


@dataclass
class _Clock:
    """What the trainer's step callback sees and records."""

    stop_at: float
    members: int
    member: int = 0
    stopped: bool = False
    members_kept: int = 0
    step_ends: list[float] = field(default_factory=list)


def _base_model(base_path: str, *, settings: Settings, device: str) -> Any:
    """The base encoder in fp32 on every device: on a GPU, mixed precision (bf16, or fp16 with loss
    scaling) trains an fp32 master copy; fp16 weights cannot be unscaled by the AMP grad scaler."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base_path, device=device)
    model.max_seq_length = min(int(model.max_seq_length or 256), settings.max_seq_length, 128)
    return model


def _probe(model: Any, train: Sequence[Example], *, unlabeled: Sequence[str], settings: Settings) -> _Probed:
    """Fit the linear probe on frozen embeddings; with unlabeled texts, add its confident
    predictions and refit it on what the classifier will be trained on."""
    classes = sorted({e.label for e in train})
    encode_started = time.monotonic()
    vectors = np.asarray(model.encode([e.text for e in train], batch_size=64))
    texts_per_s = len(train) / max(1e-3, time.monotonic() - encode_started)
    probe = fit_head(vectors, [e.label for e in train], cs=(16.0,))
    neighbours = settings.train_pseudo_neighbours
    pseudo = pseudo_label(model.encode, probe, unlabeled, settings=settings, neighbours=neighbours) if unlabeled else []
    examples = [*train, *pseudo]
    if pseudo:
        more = np.asarray(model.encode([e.text for e in pseudo], batch_size=64))
        probe = fit_head(np.vstack([vectors, more]), [e.label for e in examples], cs=(16.0,))
    return _Probed(probe, pseudo, examples, classes, texts_per_s)


def _plan(model: Any, probed: _Probed, *, settings: Settings, stop_at: float, soup: bool) -> _Plan:
    """Time one training step, then fit the epochs wanted into the time left."""
    loss = probe_loss(model, probed.probe, label_smoothing=settings.train_label_smoothing)
    n = len(probed.examples)
    wanted = epochs_for(n, settings)
    lengths = token_lengths(model, [e.text for e in probed.examples])
    batch = settings.train_batch_size
    step_s = seconds_per_step(loss, probed.examples, probed.classes, lengths=lengths, batch_size=batch)
    seconds = stop_at - time.monotonic()
    epochs = fit_epochs(wanted, examples=n, batch_size=batch, step_s=step_s, seconds=seconds)
    return _Plan(epochs, wanted, step_s, settings.train_soup if soup else 1, stop_at, loss, lengths)


def _train_members(
    base_path: str,
    model: Any,
    probed: _Probed,
    plan: _Plan,
    *,
    out_dir: Path,
    settings: Settings,
    device: str,
    progress: Progress,
) -> tuple[Any, _Clock]:
    """Train each member of the soup from the same start with its own seed while it ends in time;
    load the mean of the members' weights into the returned loss module (and so into model)."""
    from datasets import Dataset

    examples, classes = probed.examples, probed.classes
    dataset = Dataset.from_dict(
        {"text": [e.text for e in examples], "label": [classes.index(e.label) for e in examples]}
    )
    clock = _Clock(plan.stop_at, plan.members)
    loss, member_s = plan.loss, 0.0
    states: list[dict[str, Any]] = []
    for seed in range(plan.members):
        if seed and time.monotonic() + member_s > plan.stop_at:
            break  # another member would not end in time at the pace the last one took
        began = time.monotonic()
        if seed:  # every member starts from the base model and the same probe; only the seed differs
            model = _base_model(base_path, settings=settings, device=device)
            model.max_seq_length = loss.model.max_seq_length
            loss = probe_loss(model, probed.probe, label_smoothing=settings.train_label_smoothing)
        clock.member = seed
        _train_one(
            loss,
            dataset,
            seed=seed,
            epochs=plan.epochs,
            lengths=plan.lengths,
            out_dir=out_dir,
            settings=settings,
            device=device,
            callback=_step_callback(clock, progress),
        )
        member_s = time.monotonic() - began
        if not (clock.stopped and states):  # a later member cut off by the budget stays out of the soup
            states.append({k: v.detach().clone() for k, v in loss.state_dict().items()})
        if clock.stopped:
            break
    loss.load_state_dict(averaged_state(states))
    clock.members_kept = len(states)
    return loss, clock


def _step_callback(clock: _Clock, progress: Progress) -> Any:
    """A trainer callback that reports progress over all members and stops at clock.stop_at."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            progress("fine-tune", (clock.member + state.global_step / max(1, state.max_steps)) / clock.members)
            clock.step_ends.append(now := time.monotonic())
            if now > clock.stop_at:
                clock.stopped = True
                control.should_training_stop = True

    return StepClock()


def _train_one(
    loss: Any,
    dataset: Any,
    *,
    seed: int,
    epochs: float,
    lengths: Sequence[int],
    out_dir: Path,
    settings: Settings,
    device: str,
    callback: Any,
) -> None:
    """One fine-tuning of loss.model with the sentence-transformers trainer, in batches of texts of
    about one length (services/training/batches.py)."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers.trainer_callback import PrinterCallback

    precision = precision_args(device, bf16_supported=_bf16_supported(device))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=settings.train_batch_size,
        batch_sampler=sampler_factory(lengths),
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
        model=loss.model, args=args, train_dataset=dataset, loss=loss, callbacks=[callback]
    )
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout, which the CLI keeps for its JSON
    trainer.train()


def averaged_state(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean of state dicts of the same module (a uniform model soup); integer buffers (token
    type ids, position ids) are the same in every member and kept from the first."""
    import torch

    return {
        key: torch.stack([state[key] for state in states]).mean(0) if states[0][key].is_floating_point() else value
        for key, value in states[0].items()
    }


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


def precision_args(device: str, *, bf16_supported: bool) -> dict[str, bool]:
    """Mixed precision for the trainer: bf16 where the GPU has it, else fp16; none on a CPU."""
    if not device.startswith("cuda"):
        return {"bf16": False, "fp16": False}
    return {"bf16": bf16_supported, "fp16": not bf16_supported}


def _bf16_supported(device: str) -> bool:
    import torch

    return device.startswith("cuda") and bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
