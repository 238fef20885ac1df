"""Answer matching: the best FAQ entries for a ticket, with a calibrated confidence, or abstain.

A match of a text (its vector v, made by the ticket kind's served encoder) goes like this:
1. the SIFT_MATCH_CANDIDATES nearest paraphrase points (question and paraphrases of every
   entry) are read from the FAQ collection, honouring the filters (tags, locale); points whose
   entry is gone or no longer holds their text are dropped (the entries, like the calibration,
   as read at most recent.CHECK_S ago: services/matching/recent.py);
2. paraphrase score: a softmax of the similarities over the candidates (temperature
   SIFT_MATCH_TEMPERATURE), summed per entry: p_nn(f). An entry with many close paraphrases
   beats one lucky near-duplicate;
3. classifier score: when the `intent` task has a trained head on this encoder, its probability
   of each candidate entry (an intent label is an FAQ id), renormalised over the candidates:
   p_head(f). An entry the head does not know yet (added since the last training run) takes
   its p_nn instead;
4. score(f) = w * p_head(f) + (1 - w) * p_nn(f), w = SIFT_MATCH_HEAD_WEIGHT (0 without a trained
   head); the ranking is by score;
5. confidence = sigmoid(a + b * top score + c * margin + d * similarity), where margin is the
   top score minus the second, and similarity the cosine of the first entry's closest paraphrase
   (the only absolute signal: scores are relative, so an off-topic text can still have one entry
   far ahead of the others). `calibrate` fits a..d on held-out labeled tickets and picks the
   lowest threshold at which the answered share reaches SIFT_MATCH_TARGET_PRECISION; abstain =
   confidence < threshold. Until a calibration for the served models exists, confidence is the
   similarity and the threshold SIFT_MATCH_UNCALIBRATED_THRESHOLD, or, unset, one derived from the
   FAQ base itself (`base_threshold`: leave-one-out over the paraphrases); SIFT_MATCH_ABSTAIN_BELOW
   overrides the threshold always.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select

from services.classify.serving import ActiveModels, KindModel
from services.config import Settings
from services.db.models import Event, Faq, MatchCalibration
from services.matching import faq as faq_repo
from services.matching.recent import Entry, Recent
from services.vectors.base import Filters, Hit, VectorStore

log = logging.getLogger(__name__)

INTENT_TASK = "intent"


@dataclass(frozen=True)
class Answer:
    """One ranked entry."""

    faq_id: str
    question: str
    answer: str
    score: float
    similarity: float  # of its closest paraphrase


@dataclass(frozen=True)
class MatchResult:
    """The ranked entries, the confidence that the first is right, and whether to abstain."""

    matches: list[Answer]
    confidence: float
    abstain: bool
    calibrated: bool
    top: float
    margin: float
    similarity: float

    def features(self) -> tuple[float, float, float]:
        """What calibration maps to a confidence."""
        return (self.top, self.margin, self.similarity)

    def suggestions(self) -> dict[str, Any]:
        """The form stored with a ticket event."""
        return {
            "suggestions": [{"faq_id": a.faq_id, "score": round(a.score, 6)} for a in self.matches],
            "abstain": self.abstain,
            "confidence": round(self.confidence, 6),
        }


@dataclass(frozen=True)
class Calibration:
    """Confidence from (top score, margin, similarity), and the threshold below which to abstain."""

    coef: tuple[float, float, float, float] | None  # None: not calibrated, confidence is the similarity
    threshold: float

    def confidence(self, top: float, margin: float, similarity: float) -> float:
        """P(the first answer is right)."""
        if self.coef is None:
            return max(0.0, similarity)
        a, b, c, d = self.coef
        return 1.0 / (1.0 + math.exp(-(a + b * top + c * margin + d * similarity)))


def fuse(
    hits: Sequence[Hit],
    current: Mapping[str, Set[str]],
    intent: Mapping[str, Any] | None,
    *,
    temperature: float,
    head_weight: float,
) -> list[tuple[str, float, float]]:
    """(faq id, score, best similarity) of every candidate entry, best first (steps 1-4 above);
    current holds each stored entry's texts (a hit on any other text is stale)."""
    valid = [h for h in hits if h.payload.get("text") in current.get(str(h.payload.get("faq_id")), ())]
    if not valid:
        return []
    best = max(h.score for h in valid)
    p_nn: dict[str, float] = defaultdict(float)
    similarity: dict[str, float] = {}
    for hit in valid:
        faq_id = str(hit.payload["faq_id"])
        p_nn[faq_id] += math.exp((hit.score - best) / temperature)
        similarity[faq_id] = max(similarity.get(faq_id, -1.0), hit.score)
    total = sum(p_nn.values())
    for faq_id in p_nn:
        p_nn[faq_id] /= total
    scores = dict(p_nn)
    probs = intent.get("probs", {}) if intent and not intent.get("zero_shot") else {}
    mass = sum(float(probs.get(f, 0.0)) for f in p_nn)
    if mass > 0 and head_weight > 0:
        for faq_id, p in p_nn.items():
            head = float(probs[faq_id]) / mass if faq_id in probs else p
            scores[faq_id] = head_weight * head + (1 - head_weight) * p
    ranked = sorted(scores, key=lambda f: (-scores[f], f))
    return [(f, scores[f], similarity[f]) for f in ranked]


def filters_for(filters: Mapping[str, Any] | None) -> Filters | None:
    """Match filters in vector-store form: tags (any of), locale (one or any of)."""
    if not filters:
        return None
    out: dict[str, Any] = {}
    if filters.get("tags"):
        out["tags"] = list(filters["tags"])
    if filters.get("locale"):
        out["locale"] = filters["locale"]
    return out or None


class Matcher:
    """Matches vectors of the ticket kind's served encoder against the FAQ base."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VectorStore,
        models: ActiveModels,
        sessions: Callable[[], Any],
        reads: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.sessions = sessions
        self.reads = reads or sessions  # a match only reads (on SQLite a read scope takes no writer's turn)
        self._ensured: set[str] = set()
        self._derived: tuple[tuple[Any, ...], float] | None = None  # (encoder, base fingerprint), threshold
        self._deriving = threading.Lock()  # held by the one thread deriving a new threshold
        self._recent = Recent()  # calibration and entries read in the last CHECK_S

    def index(self, model: KindModel | None = None) -> faq_repo.FaqIndex:
        """Where FAQ writes go now: the FAQ collection of the ticket kind's served encoder."""
        model = model or self.models.for_kind(faq_repo.KIND)
        index = faq_repo.FaqIndex(
            self.store, faq_repo.faq_collection(model.collection), model.encoder.encode, model.encoder.dimension
        )
        if index.collection not in self._ensured:
            index.ensure()
            self._ensured.add(index.collection)
        return index

    def match_texts(
        self, texts: Sequence[str], *, top_k: int, filters: Mapping[str, Any] | None = None
    ) -> list[MatchResult]:
        """Encode texts with the served ticket encoder, classify them, and match them."""
        model = self.models.for_kind(faq_repo.KIND)
        vectors = model.encoder.encode(list(texts))
        intents = [p.get(INTENT_TASK) for p in model.predict(vectors)]
        return self.match_vectors(model, vectors, intents, top_k=top_k, filters=[filters] * len(texts))

    def match_vectors(
        self,
        model: KindModel,
        vectors: np.ndarray,
        intents: Sequence[Mapping[str, Any] | None],
        *,
        top_k: int,
        filters: Sequence[Mapping[str, Any] | None] | None = None,
        calibration: Calibration | None = None,
    ) -> list[MatchResult]:
        """One result per vector (with its own filters, if any): one batch search for all of them,
        then the entries they found and the calibration, read from SQL at most once per
        recent.CHECK_S (in one session, when one is needed)."""
        collection = self.index(model).collection
        limit = max(self.settings.match_candidates, top_k)
        each = filters if filters is not None else [None] * len(vectors)
        hits = self.store.search_batch(collection, vectors, limit=limit, filters=[filters_for(f) for f in each])
        s = self.settings
        key = (model.encoder.version, intent_version(model), s.match_abstain_below, s.match_uncalibrated_threshold)
        seen = self._recent.look(key, {str(h.payload.get("faq_id")) for hs in hits for h in hs})
        entries = dict(seen.entries)
        if calibration is None:
            calibration = seen.calibration
        if seen.missing or calibration is None:
            served: Calibration | None = None
            with self.reads() as session:
                read = _entries(faq_repo.rows_by_id(session, ids=seen.missing))
                if calibration is None:
                    calibration = served = self.calibration(session, model)
            self._recent.keep(seen, key, served, read)
            entries.update(read)
        head_weight = s.match_head_weight if _trained(intents) else 0.0
        current = {faq_id: entry.texts for faq_id, entry in entries.items()}
        results = []
        for found, intent in zip(hits, intents, strict=True):
            ranked = fuse(found, current, intent, temperature=s.match_temperature, head_weight=head_weight)
            results.append(_result(ranked, entries, calibration, top_k=top_k))
        return results

    def changed(self) -> None:
        """The FAQ base or the calibration changed in this process: the next match reads them again
        (another process's change is served within recent.CHECK_S)."""
        self._recent.changed()

    def calibration(self, session: Any, model: KindModel) -> Calibration:
        """The latest calibration for the served encoder and intent head, else the raw one."""
        fixed = self.settings.match_abstain_below
        row = session.scalar(
            select(MatchCalibration)
            .where(
                MatchCalibration.encoder_version == model.encoder.version,
                MatchCalibration.intent_version == intent_version(model),
            )
            .order_by(MatchCalibration.id.desc())
            .limit(1)
        )
        if row is None:
            raw = self.settings.match_uncalibrated_threshold
            return Calibration(
                None, fixed if fixed is not None else raw if raw is not None else self.derived(session, model)
            )
        a, b, c, d = (float(x) for x in row.coef)
        return Calibration((a, b, c, d), row.threshold if fixed is None else fixed)

    def derived(self, session: Any, model: KindModel) -> float:
        """The uncalibrated threshold derived from the FAQ base. When the base or the encoder
        changes, the last threshold is served while one background thread derives the new one
        (it encodes up to 10,000 texts: seconds, which no match should wait for, in slices that
        queries' embeddings pass between); only the first is derived in the request."""
        count, latest = session.execute(select(func.count(Faq.id), func.max(Faq.updated_at))).one()
        key = (model.encoder.version, int(count or 0), str(latest))
        known = self._derived
        if known is not None and known[0] == key:
            return known[1]
        if known is None:
            with self._deriving:
                return self._derive(session, model, key)
        if self._deriving.acquire(blocking=False):
            threading.Thread(target=self._derive_later, args=(model, key), name="sift-match-threshold").start()
        return known[1]

    def _derive_later(self, model: KindModel, key: tuple[Any, ...]) -> None:
        try:
            with self.reads() as session:
                self._derive(session, model, key)
            self.changed()  # the new threshold is served from the next match on
        except Exception:  # the last threshold stays; the next match after a change tries again
            log.exception("could not derive the match threshold from the FAQ base")
        finally:
            self._deriving.release()

    def _derive(self, session: Any, model: KindModel, key: tuple[Any, ...]) -> float:
        known = self._derived
        if known is not None and known[0] == key:  # derived by another thread meanwhile
            return known[1]
        rows = session.scalars(select(Faq).order_by(Faq.id).limit(DERIVE_MAX_ENTRIES)).all()
        entries = [faq_repo.texts_of(r.question, r.paraphrases)[:DERIVE_MAX_TEXTS] for r in rows]
        flat = [t for texts in entries for t in texts]
        # In slices: the encoder serves one call at a time, and a query waits for one slice, not all.
        parts = [model.encoder.encode(flat[i : i + _DERIVE_SLICE]) for i in range(0, len(flat), _DERIVE_SLICE)]
        vectors = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
        owners = np.repeat(np.arange(len(entries)), [len(t) for t in entries])
        self._derived = (key, base_threshold(vectors, owners))
        return self._derived[1]

    def step(
        self, model: KindModel, events: Sequence[Event], vectors: np.ndarray, predictions: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The ingest step of ticket events: their suggestions and abstain flag, from the entries in
        the ticket's locale and with one of its tags when its metadata names them."""
        intents = [p.get(INTENT_TASK) for p in predictions]
        filters = [ticket_filters(event.meta or {}) for event in events]
        results = self.match_vectors(model, vectors, intents, top_k=self.settings.match_top_k, filters=filters)
        return [r.suggestions() for r in results]


# A base this large gives a stable threshold; more would only cost encoding time.
DERIVE_MAX_ENTRIES, DERIVE_MAX_TEXTS = 500, 20
_DERIVE_SLICE = 64  # texts per encoder call while deriving (two batches: one per encode thread)
DERIVED_FALLBACK, DERIVED_RANGE = 0.5, (0.3, 0.9)


def base_threshold(vectors: np.ndarray, owners: np.ndarray) -> float:
    """Leave-one-out over the FAQ base: each text of an entry with other texts is a question whose
    answer exists (its best cosine to its own entry's other texts: an answer to give) and, were its
    entry missing, one whose answer does not (its best cosine to any other entry: an answer to
    refuse). The threshold is the one with the fewest errors, each side weighted equally, between
    the two; 0.5 for a base too small to tell."""
    if len(set(owners.tolist())) < 2:
        return DERIVED_FALLBACK
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    same = owners[:, None] == owners[None, :]
    right = np.where(same, sims, -np.inf).max(axis=1)
    wrong = np.where(same, -np.inf, sims).max(axis=1)
    keep = np.isfinite(right)  # texts whose entry has another text
    right, wrong = right[keep], wrong[keep]
    if len(right) == 0:
        return DERIVED_FALLBACK
    candidates = np.unique(np.concatenate([right, wrong]))
    errors = [(right < t).mean() + (wrong >= t).mean() for t in candidates]
    best = float(candidates[int(np.argmin(errors))])
    below = wrong[wrong < best]  # halfway to the closest refused similarity under it
    threshold = (best + float(below.max())) / 2 if len(below) else best
    return float(np.clip(threshold, *DERIVED_RANGE))


def ticket_filters(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """Match filters from a ticket's metadata: `locale` (a string) and `tags` (a list of strings)."""
    out: dict[str, Any] = {}
    if isinstance(metadata.get("locale"), str) and metadata["locale"]:
        out["locale"] = metadata["locale"]
    tags = metadata.get("tags")
    if isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags):
        out["tags"] = tags
    return out or None


def intent_version(model: KindModel) -> str | None:
    """The version of the trained intent head a kind model serves (None: no trained head)."""
    for task, _, version, zero_shot in model.heads:
        if task == INTENT_TASK and not zero_shot:
            return version
    return None


def _trained(intents: Sequence[Mapping[str, Any] | None]) -> bool:
    return any(i is not None and not i.get("zero_shot") for i in intents)


def _entries(rows: Mapping[str, Faq]) -> dict[str, Entry]:
    return {
        faq_id: Entry(row.question, row.answer, frozenset(faq_repo.texts_of(row.question, row.paraphrases)))
        for faq_id, row in rows.items()
    }


def _result(
    ranked: list[tuple[str, float, float]], rows: Mapping[str, Entry], calibration: Calibration, *, top_k: int
) -> MatchResult:
    if not ranked:
        return MatchResult([], 0.0, True, calibration.coef is not None, 0.0, 0.0, 0.0)
    top, similarity = ranked[0][1], ranked[0][2]
    margin = top - (ranked[1][1] if len(ranked) > 1 else 0.0)
    confidence = calibration.confidence(top, margin, similarity)
    answers = [
        Answer(f, rows[f].question, rows[f].answer, round(score, 6), round(sim, 6)) for f, score, sim in ranked[:top_k]
    ]
    abstain = confidence < calibration.threshold
    return MatchResult(answers, round(confidence, 6), abstain, calibration.coef is not None, top, margin, similarity)
