"""The examples a run learns from: the snapshot of a task's labels, the deterministic holdout split,
and the label descriptions that join few-shot training sets.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from services.classify.tasks import describe
from services.config import Settings
from services.training import labels as label_repo

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


def with_label_descriptions(
    train: Sequence[Example], descriptions: dict[str, str], settings: Settings
) -> list[Example]:
    """With few labels per class (SIFT_TRAIN_PSEUDO_BELOW), each label's description (or its name
    in words) joins the training examples: the label's name is evidence a handful of examples
    lacks (what tells "card_arrival" from "card_delivery_estimate")."""
    if not (settings.train_label_descriptions and few_per_label(train, settings.train_pseudo_below)):
        return list(train)
    labels = sorted({e.label for e in train})
    return [*train, *(Example(descriptions.get(label) or describe(label), label) for label in labels)]


def fine_tune_split(train: Sequence[Example], settings: Settings) -> tuple[list[Example], list[Example]]:
    """(texts the encoder is fine-tuned on, texts kept to choose the head's C). With few labels
    per class every label is worth more to the fine-tuning than to choosing C."""
    if few_per_label(train, settings.train_pseudo_below):
        return list(train), []
    return split(train, holdout=settings.train_head_validation, salt="head-validation")


def few_per_label(train: Sequence[Example], below: int) -> bool:
    counts = sorted(Counter(e.label for e in train).values())
    return bool(counts) and counts[len(counts) // 2] < below
