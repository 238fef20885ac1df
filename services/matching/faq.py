"""The FAQ knowledge base: entries in SQL, their question and paraphrases as points in Qdrant.

Each entry's question and every paraphrase is one point of the FAQ collection of the ticket
kind's current encoder (`faq_collection`), with id uuid5(faq id, text): writing an entry twice
overwrites the same points. A write embeds and upserts the entry's points first, then writes the
row, then removes the points of texts the entry no longer has; matching reads the rows and
ignores any point whose text its row does not hold, so a write cut short in between never
answers with stale content, and a retry repairs it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.lookup import require
from services.db.models import Event, Faq
from services.errors import InvalidInput, invalid_batch
from services.vectors.base import PayloadIndex, VectorPoint, VectorStore

KIND = "ticket"  # FAQ entries answer tickets: their points live in the ticket encoder's space
FAQ_POINTS = uuid.UUID("a3c9d0f4-1f0e-4b8f-9b55-2f1b7c3e9d21")
FAQ_INDEXES = (PayloadIndex("faq_id", "keyword"), PayloadIndex("tags", "keyword"), PayloadIndex("locale", "keyword"))
MAX_TAGS = 50


class FaqIn(BaseModel):
    """One FAQ entry as a client sends it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="your id; also the `intent` label of tickets it answers")
    question: str
    answer: str
    paraphrases: list[str] = Field(default_factory=list, description="other ways people ask the question")
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    locale: str | None = Field(None, min_length=1, max_length=35)

    @field_validator("id")
    @classmethod
    def _addressable(cls, value: str) -> str:
        if not value.isprintable() or value != value.strip() or "/" in value:
            raise ValueError("id must be printable, without '/' or surrounding spaces")
        return value

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or blank")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if any(not t.strip() or len(t) > 64 for t in value):
            raise ValueError("each tag must be 1 to 64 characters, not blank")
        return list(dict.fromkeys(value))


@dataclass(frozen=True)
class FaqLimits:
    """Size limits, from settings."""

    max_faqs: int
    max_paraphrases: int
    max_text_chars: int


@dataclass(frozen=True)
class Written:
    """What a bulk write did."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]


def faq_collection(kind_collection: str) -> str:
    """The FAQ collection that goes with a ticket collection (same encoder, same space)."""
    return f"{kind_collection}__faq"


def texts_of(question: str, paraphrases: Iterable[str]) -> list[str]:
    """The indexed texts of an entry: its question and paraphrases, each once."""
    return list(dict.fromkeys(t.strip() for t in [question, *paraphrases] if t.strip()))


def point_id(faq_id: str, text: str) -> str:
    """The point of one text of an entry."""
    return str(uuid.uuid5(FAQ_POINTS, f"{faq_id}\x00{text}"))


@dataclass
class FaqIndex:
    """Where an entry's vectors go: a store, the collection, and the encode function of the
    encoder that made that collection."""

    store: VectorStore
    collection: str
    encode: Callable[[list[str]], np.ndarray]
    dimension: int

    def ensure(self) -> None:
        """Create the collection and its payload indexes when missing."""
        self.store.ensure_collection(self.collection, dimension=self.dimension, indexes=FAQ_INDEXES)

    def write(self, faqs: Sequence[Faq]) -> int:
        """Embed and upsert every text of the entries, in one encode and one upsert; returns points."""
        pairs = [(faq, text) for faq in faqs for text in texts_of(faq.question, faq.paraphrases)]
        if not pairs:
            return 0
        vectors = self.encode([text for _, text in pairs])
        points = [
            VectorPoint(
                point_id(faq.id, text),
                vectors[i].tolist(),
                {"faq_id": faq.id, "text": text, "tags": list(faq.tags), "locale": faq.locale},
            )
            for i, (faq, text) in enumerate(pairs)
        ]
        self.store.upsert(self.collection, points)
        return len(points)

    def remove(self, faq_id: str, texts: Iterable[str]) -> None:
        """Delete the points of these texts of an entry."""
        ids = [point_id(faq_id, text) for text in texts]
        if ids:
            self.store.delete(self.collection, ids)


def upsert(
    session: Session, *, faqs: Sequence[FaqIn], index: FaqIndex, limits: FaqLimits, now: datetime | None = None
) -> Written:
    """Validate every entry, then write them (vectors first); nothing is written on any error."""
    now = now or datetime.now(UTC)
    check(faqs=faqs, limits=limits)
    existing = rows_by_id(session, ids=[f.id for f in faqs])
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    changed: list[tuple[Faq, list[str]]] = []  # (row as it will be, texts it no longer has)
    for item in faqs:
        digest = _content_hash(item)
        row = existing.get(item.id)
        if row is not None and row.content_hash == digest:
            unchanged.append(item.id)
            continue
        old_texts = texts_of(row.question, row.paraphrases) if row is not None else []
        if row is None:
            row = Faq(id=item.id, created_at=now)
            session.add(row)
            created.append(item.id)
        else:
            updated.append(item.id)
        row.question, row.answer, row.locale = item.question, item.answer, item.locale
        row.paraphrases, row.tags = list(item.paraphrases), list(item.tags)
        row.content_hash, row.updated_at = digest, now
        stale = set(old_texts) - set(texts_of(row.question, row.paraphrases))
        changed.append((row, sorted(stale)))
    index.write([row for row, _ in changed])
    session.flush()
    for row, stale_texts in changed:
        index.remove(row.id, stale_texts)
    return Written(created=created, updated=updated, unchanged=unchanged)


def check(*, faqs: Sequence[FaqIn], limits: FaqLimits) -> None:
    """Raise InvalidInput listing every entry over a limit or sent twice."""
    if not faqs:
        raise InvalidInput("send at least one entry in 'faqs'")
    if len(faqs) > limits.max_faqs:
        raise InvalidInput(f"too many entries: {len(faqs)} in one request, at most {limits.max_faqs}; split it")
    problems: list[dict[str, object]] = []
    seen: set[str] = set()
    for i, item in enumerate(faqs):
        if item.id in seen:
            problems.append({"index": i, "field": "id", "problem": f"id {item.id!r} is sent twice in this request"})
        seen.add(item.id)
        if len(item.paraphrases) > limits.max_paraphrases:
            problems.append(
                {"index": i, "field": "paraphrases", "problem": f"more than {limits.max_paraphrases} paraphrases"}
            )
        for field, text in (
            ("question", item.question),
            ("answer", item.answer),
            *(("paraphrases", p) for p in item.paraphrases),
        ):
            if len(text) > limits.max_text_chars or "\x00" in text:
                problems.append(
                    {
                        "index": i,
                        "field": field,
                        "problem": f"longer than {limits.max_text_chars} characters or has a NUL",
                    }
                )
                break
        if any(not p.strip() for p in item.paraphrases):
            problems.append({"index": i, "field": "paraphrases", "problem": "a paraphrase is empty or blank"})
    if problems:
        raise invalid_batch("entry", problems, field="faqs")


def delete(session: Session, *, faq_id: str, index: FaqIndex) -> None:
    """Remove an entry and its points, or NotFound."""
    row = get(session, faq_id=faq_id)
    texts = texts_of(row.question, row.paraphrases)
    session.delete(row)
    session.flush()
    index.remove(faq_id, texts)


def get(session: Session, *, faq_id: str) -> Faq:
    """An entry by id, or NotFound."""
    return require(session, Faq, faq_id, missing=f"no FAQ with id {faq_id!r}")


def list_faqs(
    session: Session, *, tag: str | None = None, locale: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Faq], int]:
    """A page of entries in id order, and how many match in all (tag filtering is done here,
    not in SQL, because JSON array containment differs between SQLite and PostgreSQL)."""
    stmt = select(Faq).order_by(Faq.id)
    if locale is not None:
        stmt = stmt.where(Faq.locale == locale)
    if tag is None:
        total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        return list(session.scalars(stmt.limit(limit).offset(offset))), total
    rows = [row for row in session.scalars(stmt) if tag in row.tags]
    return rows[offset : offset + limit], len(rows)


def rows_by_id(session: Session, *, ids: Iterable[str]) -> dict[str, Faq]:
    """The stored entries among ids."""
    wanted = list(set(ids))
    out: dict[str, Faq] = {}
    for start in range(0, len(wanted), 1000):
        out.update((r.id, r) for r in session.scalars(select(Faq).where(Faq.id.in_(wanted[start : start + 1000]))))
    return out


def add_paraphrases(
    session: Session,
    *,
    faq_id: str,
    texts: Sequence[str],
    event_ids: Sequence[str],
    index: FaqIndex,
    limits: FaqLimits,
) -> tuple[Faq, int]:
    """Add paraphrases to an entry, given as texts or as the ids of resolved ticket events;
    returns the entry and how many were new."""
    row = get(session, faq_id=faq_id)
    events = {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(list(event_ids))))}
    problems = [{"field": "event_ids", "problem": f"no event with id {i!r}"} for i in event_ids if i not in events]
    problems += [
        {"field": "event_ids", "problem": f"event {i!r} is a {e.kind}, not a ticket"}
        for i, e in events.items()
        if e.kind != "ticket"
    ]
    if problems or not (texts or event_ids):
        raise InvalidInput("give texts or event_ids of ticket events to add as paraphrases", details=problems or None)
    new = [t for t in [*texts, *(events[i].text for i in event_ids)] if t.strip()]
    known = set(texts_of(row.question, row.paraphrases))
    added = [t for t in dict.fromkeys(t.strip() for t in new) if t not in known]
    item = FaqIn(
        id=row.id,
        question=row.question,
        answer=row.answer,
        paraphrases=[*row.paraphrases, *added],
        tags=row.tags,
        locale=row.locale,
    )
    upsert(session, faqs=[item], index=index, limits=limits)
    return row, len(added)


def updated_since(session: Session, *, since: datetime) -> list[Faq]:
    """Entries written at or after a moment (for a re-index's catch-up)."""
    return list(session.scalars(select(Faq).where(Faq.updated_at >= since).order_by(Faq.id)))


def page_after(session: Session, *, after: str, limit: int) -> list[Faq]:
    """Entries in id order after an id (for re-embedding the whole base)."""
    return list(session.scalars(select(Faq).where(Faq.id > after).order_by(Faq.id).limit(limit)))


def as_dict(row: Faq) -> dict[str, Any]:
    """An entry in its public form."""
    return {
        "id": row.id,
        "question": row.question,
        "answer": row.answer,
        "paraphrases": list(row.paraphrases),
        "tags": list(row.tags),
        "locale": row.locale,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def _content_hash(item: FaqIn) -> str:
    content = [item.question, item.answer, item.paraphrases, item.tags, item.locale]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()


def reembed(
    sessions: Callable[[], Any],
    store: VectorStore,
    encoder: Any,
    ticket_collection: str,
    *,
    since: datetime | None,
    page: int,
) -> int:
    """Embed the FAQ base (or the entries written since a moment) into the FAQ collection that goes
    with a new ticket collection, so matching answers from the first search after a re-index switches
    the ticket encoder; returns how many points were written."""
    index = FaqIndex(store, faq_collection(ticket_collection), encoder.encode, encoder.dimension)
    index.ensure()
    if since is not None:
        with sessions() as session:
            rows = updated_since(session, since=since)
            session.expunge_all()
        return index.write(rows)
    after, total = "", 0
    while True:
        with sessions() as session:
            rows = page_after(session, after=after, limit=page)
            session.expunge_all()
        if not rows:
            return total
        total += index.write(rows)
        after = rows[-1].id
