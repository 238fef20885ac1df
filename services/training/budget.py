"""The time budget of a fine-tuning: how many epochs are wanted, how long a training step takes on
this machine, and how many epochs fit in the time left."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.config import Settings
from services.training.batches import grouped_batches
from services.training.dataset import Example


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


def typical_batch(lengths: Sequence[int], batch_size: int) -> list[int]:
    """Indices of a batch like the trainer's: it pads a batch to its longest text and groups texts of
    about one length (services/training/batches.py), so of the first epoch's batches the one whose
    padded size (texts x longest) is nearest the mean padded size."""
    batches = grouped_batches(lengths, batch_size, seed=0, epoch=0)
    padded = np.array([len(b) * max(lengths[i] for i in b) for b in batches])
    return sorted(batches[int(np.argmin(np.abs(padded - padded.mean())))])


def token_lengths(model: Any, texts: Sequence[str]) -> list[int]:
    """Each text's length in the model's tokens, as the trainer truncates it."""
    tokens = model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length)
    return [len(ids) for ids in tokens["input_ids"]]


def seconds_per_step(
    loss: Any, examples: Sequence[Example], classes: Sequence[str], *, lengths: Sequence[int], batch_size: int
) -> float:
    """Wall time of one training step: forward and backward of a typical batch (typical_batch), in
    training mode, the fastest of 3 after a warm-up one (the first ones set up kernels and memory),
    plus a sixth for the optimizer step. Gradients are dropped afterwards, and the trainer seeds its
    random state when it is made, so nothing here changes the training. Without mixed precision,
    so on a GPU an overestimate."""
    import torch

    if not examples:
        return 0.0
    model = loss.model
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
