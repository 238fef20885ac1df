"""Calibrating match confidence on labeled tickets the served models have not trained on.

The examples are the `intent` labels in force whose label is an FAQ id: those in the training
holdout (services.training.dataset.split, the same deterministic split a training run makes, so the
served head never saw them), plus every `rejected` outcome (never trained on), minus any ticket
whose text is itself an indexed paraphrase (it would match itself). Each is matched with the
served models; a logistic regression maps (top score, margin, similarity) to P(first answer
right), and the threshold is the lowest confidence at which the answered examples reach the
target precision (its Wilson lower bound, so that new tickets reach it too). The figures it
reports are measured on the examples it was fitted on; bench/match.py measures them on examples
kept out of the fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from services.db.models import Faq, MatchCalibration
from services.errors import InvalidInput
from services.matching.faq import KIND, texts_of
from services.matching.matcher import INTENT_TASK, Calibration, Matcher, intent_version
from services.training import dataset
from services.training import labels as label_repo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fitted:
    """A fitted calibration and how it does on its examples."""

    coef: tuple[float, float, float, float]
    threshold: float
    metrics: dict[str, float | int | str]


def fit(features: np.ndarray, correct: np.ndarray, *, target: float) -> Fitted:
    """Logistic calibration of (top, margin, similarity) and the threshold that reaches `target` precision."""
    n = len(correct)
    if correct.min() == correct.max():  # one class only: a constant confidence
        rate = float(np.clip(correct.mean(), 1e-3, 1 - 1e-3))
        coef: tuple[float, float, float, float] = (math.log(rate / (1 - rate)), 0.0, 0.0, 0.0)
    else:
        model = LogisticRegression(C=10.0).fit(features, correct)
        b, c, d = (float(x) for x in model.coef_[0])
        coef = (float(model.intercept_[0]), b, c, d)
    confidence = 1.0 / (1.0 + np.exp(-(coef[0] + features @ np.array(coef[1:]))))
    threshold, answered, precision = choose_threshold(confidence, correct, target=target)
    metrics: dict[str, float | int | str] = {
        "n": n,
        "top1_accuracy": round(float(correct.mean()), 4),
        "answered_share": round(answered / n, 4),
        "abstain_rate": round(1 - answered / n, 4),
        "precision_answered": round(precision, 4),
    }
    return Fitted(coef, threshold, metrics)


# The threshold is chosen on a sample, so the precision it reaches there flatters new tickets a
# little; asking the Wilson lower bound (z = 1, about 84% one-sided) to reach the target instead of
# the observed precision keeps the out-of-sample precision at the target (bench/match.py).
WILSON_Z = 1.0


def choose_threshold(
    confidence: np.ndarray, correct: np.ndarray, *, target: float, z: float = WILSON_Z
) -> tuple[float, int, float]:
    """(threshold, answered count, precision of the answered): the lowest threshold at which the
    answered examples' precision (its Wilson lower bound, with z) reaches target; 1.0 (abstain on
    everything) when none does."""
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    hits = np.cumsum(correct[order])
    n = np.arange(1, len(order) + 1)
    last_of_tie = np.r_[ranked[:-1] != ranked[1:], True]  # a threshold answers all of equal confidence
    ok = np.nonzero((wilson_lower(hits, n, z) >= target) & last_of_tie)[0]
    if len(ok) == 0:
        return 1.0, 0, 0.0
    threshold = float(confidence[order[int(ok[-1])]])
    answered = confidence >= threshold
    return threshold, int(answered.sum()), float(correct[answered].mean())


def wilson_lower(hits: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """The Wilson score interval's lower bound of a proportion hits / n."""
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower: np.ndarray = (centre - spread) / (1 + z * z / n)
    return lower


def _too_few(found: int, accepted: list[dataset.Example], faqs: Mapping[str, Any], need: int, holdout: float) -> str:
    """What calibration needs, what it found, and how to make the labels it reads."""
    others = sorted({e.label for e in accepted if e.label not in faqs})
    wrong = f"; {len(others)} intent label(s) are not FAQ ids (e.g. {others[0]!r})" if others else ""
    return (
        f"calibration needs {need} held-out labeled tickets whose `intent` label is an FAQ id; it found {found} "
        f"(of {len(accepted)} intent labels{wrong}). Label tickets with the id of the FAQ entry that answers "
        f"them: `sift labels import FILE --task intent` with columns text,label (examples/labeled-tickets.csv), "
        f'or POST /v1/labels {{"labels": [{{"text": ..., "task": "intent", "label": FAQ_ID}}]}}. A share of '
        f"{holdout:g} of them is held out (SIFT_TRAIN_HOLDOUT): about {math.ceil(need / holdout)} labels give {need}."
    )


def calibrate(matcher: Matcher, *, now: datetime | None = None) -> MatchCalibration:
    """Fit and store a calibration for the served ticket encoder and intent head."""
    s = matcher.settings
    matcher.models.refresh(force=True)  # right after a promotion: calibrate what is served now
    model = matcher.models.for_kind(KIND)
    with matcher.sessions() as session:
        rows = label_repo.current(session, task=INTENT_TASK, with_rejected=True)
        faqs = {f.id: texts_of(f.question, f.paraphrases) for f in session.scalars(select(Faq))}
    indexed = {t for texts in faqs.values() for t in texts}
    accepted = [dataset.Example(r.text, r.label) for r in rows if r.outcome != "rejected"]
    _, holdout = dataset.split(accepted, holdout=s.train_holdout, min_per_label=s.train_min_holdout_per_label)
    examples = [(e.text, e.label, True) for e in holdout if e.label in faqs and e.text.strip() not in indexed]
    examples += [(r.text, r.label, False) for r in rows if r.outcome == "rejected" and r.text.strip() not in indexed]
    if len(examples) < s.match_min_calibration_examples:
        raise InvalidInput(_too_few(len(examples), accepted, faqs, s.match_min_calibration_examples, s.train_holdout))
    vectors = model.encoder.encode([text for text, _, _ in examples])
    intents = [p.get(INTENT_TASK) for p in model.predict(vectors)]
    raw = Calibration(None, 0.0)
    results = matcher.match_vectors(model, vectors, intents, top_k=1, calibration=raw)
    features, correct = [], []
    for (_, label, positive), result in zip(examples, results, strict=True):
        first = result.matches[0].faq_id if result.matches else None
        if not positive and first != label:
            continue  # a rejected answer that is not first now says nothing about the first
        features.append(result.features())
        correct.append(1.0 if positive and first == label else 0.0)
    fitted = fit(np.array(features), np.array(correct), target=s.match_target_precision)
    row = MatchCalibration(
        encoder_version=model.encoder.version,
        intent_version=intent_version(model),
        coef=list(fitted.coef),
        threshold=fitted.threshold,
        target=s.match_target_precision,
        metrics=fitted.metrics,
        created_at=now or datetime.now(UTC),
    )
    with matcher.sessions() as session:
        session.add(row)
        session.flush()
        session.expunge(row)
    matcher.changed()
    log.info("match calibration %s: %s", row.id, fitted.metrics)
    return row
