"""The watchlist and entity linking of news.

Linking rules (what `link` does with one news event):
1. Producer-supplied `entities` are trusted: each one that names a watched entity (its id or its
   ticker, case-insensitively) is linked with method `producer`, and the text is not searched.
2. Otherwise the title and text are searched, always on word boundaries:
   - ticker: `$AAPL`, `(AAPL)` or `NASDAQ: AAPL` always; a bare ticker only when it has 3+ letters
     and is written in capitals (`AAPL`, not `aapl`; a bare `GE` or `A` is too common to trust);
   - name or alias of two or more words (`Apple Inc`, `Deutsche Bank`): any case;
   - name or alias of one word (`Apple`, `Nokia`): written with its capitals as given, and only
     when the text also reads like business news: a company suffix right after it (`Apple Inc`,
     `Nokia Oyj`) or a finance word anywhere (shares, profit, revenue, CEO, quarter, ...). So
     "Apple pie: peel the apples" links to nothing, while "Apple shares fell 3%" links to AAPL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.lookup import require
from services.db.models import Event, WatchedEntity
from services.errors import InvalidInput

RULES = ("negative_share", "negative_spike", "sentiment_drop")
RULE_KEYS = {"enabled", "min_volume", "min_negatives", "threshold", "severity"}
COMPANY_SUFFIX = r"(?:Inc|Corp|Corporation|Ltd|plc|PLC|AG|SA|NV|Oyj|Oy|AB|ASA|Group|Holdings|Co)\b"
FINANCE_WORDS = re.compile(
    r"\b(?:shares?|stocks?|profit|profits|loss|losses|revenue|revenues|sales|earnings|quarter|quarterly|"
    r"CEO|CFO|dividend|investors?|analysts?|guidance|forecast|operating|net|EUR|USD|mn|million|billion|"
    r"percent|market|company|firm|contract|acquisition|merger|layoffs?|bankruptcy|downgrade|upgrade)\b|%",
    re.IGNORECASE,
)


class WatchIn(BaseModel):
    """A watched company: its name, ticker, other names, and per-rule overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    ticker: str | None = Field(None, min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    aliases: list[str] = Field(default_factory=list, max_length=50)
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=f"per rule ({', '.join(RULES)}): enabled, min_volume, threshold, severity",
    )

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        if any(not a.strip() or len(a) > 200 for a in value):
            raise ValueError("each alias must be 1 to 200 characters, not blank")
        return list(dict.fromkeys(a.strip() for a in value))

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for rule, override in value.items():
            if rule not in RULES:
                raise ValueError(f"unknown rule {rule!r}; rules are {', '.join(RULES)}")
            unknown = set(override) - RULE_KEYS
            if unknown:
                raise ValueError(f"rule {rule!r}: unknown keys {sorted(unknown)}; use {sorted(RULE_KEYS)}")
            if "severity" in override and override["severity"] not in ("low", "medium", "high"):
                raise ValueError(f"rule {rule!r}: severity is low, medium or high")
        return value


def put(session: Session, *, entity: str, body: WatchIn, now: datetime | None = None) -> WatchedEntity:
    """Create or replace a watched entity."""
    now = now or datetime.now(UTC)
    if not entity or len(entity) > 64 or not entity.isprintable() or "/" in entity or entity != entity.strip():
        raise InvalidInput("entity must be 1 to 64 printable characters, without '/' or surrounding spaces")
    row = session.get(WatchedEntity, entity)
    if row is None:
        row = WatchedEntity(entity=entity, created_at=now)
        session.add(row)
    row.name, row.ticker, row.aliases, row.rules, row.updated_at = body.name, body.ticker, body.aliases, body.rules, now
    session.flush()
    return row


def get(session: Session, *, entity: str) -> WatchedEntity:
    """A watched entity, or NotFound."""
    return require(session, WatchedEntity, entity, missing=f"{entity!r} is not on the watchlist")


def delete(session: Session, *, entity: str) -> None:
    """Stop watching an entity (its links, buckets and alerts stay)."""
    session.delete(get(session, entity=entity))
    session.flush()


def all_entities(session: Session) -> list[WatchedEntity]:
    """The whole watchlist, by entity."""
    return list(session.scalars(select(WatchedEntity).order_by(WatchedEntity.entity)))


def as_dict(row: WatchedEntity) -> dict[str, Any]:
    """The public form of a watched entity."""
    return {"entity": row.entity, "name": row.name, "ticker": row.ticker, "aliases": row.aliases, "rules": row.rules}


@dataclass(frozen=True)
class Matcher:
    """Compiled patterns for one watched entity."""

    entity: str
    ticker: str | None
    tickers: tuple[re.Pattern[str], ...]  # enough on their own
    names: tuple[re.Pattern[str], ...]  # multi-word names: enough on their own
    single: tuple[re.Pattern[str], ...]  # one-word names: need business context


def compile_watchlist(rows: Iterable[WatchedEntity]) -> list[Matcher]:
    """Patterns for every watched entity (built once per watchlist version)."""
    out = []
    for row in rows:
        tickers: list[re.Pattern[str]] = []
        names: list[re.Pattern[str]] = []
        single: list[re.Pattern[str]] = []
        if row.ticker:
            t = re.escape(row.ticker)
            tickers.append(re.compile(rf"(?:\${t}\b|\({t}\)|\b(?:NYSE|NASDAQ|Nasdaq|LSE|OMX|XETRA):\s*{t}\b)"))
            if len(row.ticker) >= 3:
                tickers.append(re.compile(rf"(?<![\w$]){t}\b"))
        for name in dict.fromkeys([row.name, *row.aliases]):
            words = name.split()
            body = r"\s+".join(re.escape(w) for w in words)
            if len(words) >= 2:
                names.append(re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE))
            else:
                single.append(re.compile(rf"(?<!\w){body}(?:\s+{COMPANY_SUFFIX})?(?!\w)"))
        out.append(Matcher(row.entity, row.ticker, tuple(tickers), tuple(names), tuple(single)))
    return out


def link(matchers: Sequence[Matcher], *, text: str, title: str | None, producer: Sequence[str]) -> list[dict[str, str]]:
    """The watched entities a news event is about, each with how it was found (rules above)."""
    if producer:
        wanted = {p.strip().upper() for p in producer}
        return [
            {"entity": m.entity, "method": "producer"}
            for m in matchers
            if m.entity.upper() in wanted or (m.ticker and m.ticker.upper() in wanted)
        ]
    passage = f"{title}. {text}" if title else text
    business = FINANCE_WORDS.search(passage) is not None
    links = []
    for m in matchers:
        if any(p.search(passage) for p in m.tickers):
            links.append({"entity": m.entity, "method": "ticker"})
        elif any(p.search(passage) for p in m.names):
            links.append({"entity": m.entity, "method": "name"})
        elif any(_single_hit(p, passage, business) for p in m.single):
            links.append({"entity": m.entity, "method": "alias"})
    return links


def _single_hit(pattern: re.Pattern[str], passage: str, business: bool) -> bool:
    return any(business or re.search(COMPANY_SUFFIX, found.group(0)) is not None for found in pattern.finditer(passage))


class Linker:
    """The ingest step of news: entity links from the watchlist, re-read every SIFT_MODEL_RELOAD_S."""

    def __init__(self, *, sessions: Callable[[], Any], reload_s: float) -> None:
        self.sessions = sessions
        self.reload_s = reload_s
        self._matchers: list[Matcher] = []
        self._read_at = -float("inf")

    def matchers(self) -> list[Matcher]:
        """The compiled watchlist, re-read when it is older than reload_s."""
        if time.monotonic() - self._read_at >= self.reload_s:
            with self.sessions() as session:
                self._matchers = compile_watchlist(all_entities(session))
            self._read_at = time.monotonic()
        return self._matchers

    def step(self, model: Any, events: Sequence[Event], vectors: Any, predictions: Any) -> list[dict[str, Any]]:
        """Each news event's links: {"entity_links": [{"entity", "method"}]}."""
        matchers = self.matchers()
        return [
            {"entity_links": link(matchers, text=e.text, title=e.title, producer=list(e.entities or []))}
            for e in events
        ]
