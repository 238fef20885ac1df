"""A task's head: a softmax over a linear map of the L2-normalised event embedding (one matrix
product per batch after the forward pass); zero-shot, its rows are the label descriptions' embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Head:
    """softmax(x @ weights.T + bias) over labels."""

    labels: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray

    def probs(self, vectors: np.ndarray) -> np.ndarray:
        """Probabilities, one row per vector, one column per label."""
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return out

    def predict(self, vectors: np.ndarray) -> list[str]:
        """The most probable label of each vector."""
        return [self.labels[i] for i in self.probs(vectors).argmax(axis=1)]

    @classmethod
    def zero_shot(cls, labels: Sequence[str], description_vectors: np.ndarray, *, temperature: float) -> Head:
        """Scaled cosine similarity to each label's description (vectors are unit length)."""
        weights = np.asarray(description_vectors, dtype=np.float32) / temperature
        return cls(tuple(labels), weights, np.zeros(len(labels), dtype=np.float32))

    @classmethod
    def from_logistic(cls, labels: Sequence[str], coef: np.ndarray, intercept: np.ndarray) -> Head:
        """From a fitted multinomial logistic regression (a binary one has a single row)."""
        coef = np.asarray(coef, dtype=np.float32)
        intercept = np.asarray(intercept, dtype=np.float32)
        if len(labels) == 2 and coef.shape[0] == 1:
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
        return cls(tuple(labels), coef, intercept)

    def averaged_with(self, other: Head) -> Head:
        """One linear head whose logits are the mean of both heads' logits (its probabilities are
        the normalised geometric mean of theirs). Both must have the same labels in the same order."""
        if self.labels != other.labels:
            raise ValueError(f"heads over different labels: {self.labels} and {other.labels}")
        return Head(self.labels, (self.weights + other.weights) / 2, (self.bias + other.bias) / 2)

    def save(self, path: Path) -> None:
        """Write the head as head.npz under path."""
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "head.npz", labels=np.array(self.labels, dtype=object), weights=self.weights, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> Head:
        """Read head.npz from path."""
        with np.load(path / "head.npz", allow_pickle=True) as data:
            return cls(tuple(str(x) for x in data["labels"]), data["weights"], data["bias"])


def prediction(head: Head, probs: np.ndarray, *, version: str, zero_shot: bool) -> dict[str, Any]:
    """The stored form of one prediction: label, a probability per label, version, zero_shot."""
    best = int(probs.argmax())
    return {
        "label": head.labels[best],
        "probs": {label: round(float(p), 6) for label, p in zip(head.labels, probs, strict=True)},
        "model_version": version,
        "zero_shot": zero_shot,
    }
