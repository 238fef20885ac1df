"""SQLAlchemy 2 models. The events row is the source of truth for an event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES: tuple[str, ...] = ("queued", "processing", "done", "failed")


def as_utc(value: datetime) -> datetime:
    """A timestamp read back from the database, with its zone: SQLite returns it naive (written in UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Event(Base):
    """One text event and what the pipeline made of it."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    point_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    entities: Mapped[list[Any]] = mapped_column(JSON, default=list)
    content_hash: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    predictions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The point id before migration 0007, until the store's owner has moved the point there.
    moved_from_point: Mapped[str | None] = mapped_column(String(36), nullable=True)

    __table_args__ = (
        Index("ix_events_status_enqueued", "status", "enqueued_at"),
        Index("ix_events_moved_from_point", "moved_from_point"),
        Index("ix_events_kind_status", "kind", "status"),
        Index("ix_events_kind_status_processed", "kind", "status", "processed_at"),  # a kind's newest items
        Index("ix_events_processed_at", "processed_at"),
    )


class ClassTask(Base):
    """A classification task: a name, the kind of event it reads, and its label set.

    labels is [{"name", "description"}]; open_labels lets labels come from the data (intent,
    category); fine_tune lets its runs fine-tune the kind's encoder (one such task per kind)."""

    __tablename__ = "tasks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    open_labels: Mapped[bool] = mapped_column(Boolean, default=False)
    fine_tune: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Label(Base):
    """One label given to a text for a task. A correction adds a row and marks the old one
    superseded: both are kept, so every training snapshot can be rebuilt."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(64), ForeignKey("tasks.name"))
    event_id: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(32), default="api")
    # An agent's outcome for an FAQ suggestion: accepted / manual (the label is the right FAQ),
    # rejected (the label is the FAQ that was wrong; kept for calibration, never trained on).
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_labels_task_current", "task", "superseded_by", "id"),
        Index("ix_labels_event_task", "event_id", "task"),
    )


class ModelVersion(Base):
    """The registry: one row per trained model (a head, and an encoder when it was fine-tuned).

    status: candidate (trained, not promoted), reindexing (promoted, waiting for its vectors),
    active (one per task), retired (was active), rejected (did not beat the active one)."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    encoder_version: Mapped[str] = mapped_column(String(128))
    artifact_path: Mapped[str] = mapped_column(Text)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_model_versions_task_status", "task", "status"),)


class TrainingRun(Base):
    """One training run of a task, from queued to succeeded or failed."""

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str] = mapped_column(String(32), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    trigger: Mapped[str] = mapped_column(String(16), default="api")
    label_count: Mapped[int] = mapped_column(Integer, default=0)
    max_label_id: Mapped[int] = mapped_column(Integer, default=0)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The process training it ("host:pid:thread") and until when, extended by its heartbeat.
    lease_holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_training_runs_task_created", "task", "created_at"),)


class KindEncoder(Base):
    """The alias of a kind: which encoder embeds its events and which collection holds them.
    Switched in one UPDATE when a re-index finishes, so readers never see a mix."""

    __tablename__ = "kind_encoders"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    encoder_version: Mapped[str] = mapped_column(String(128))
    encoder_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    collection: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReindexJob(Base):
    """Re-embedding every event of a kind into a new collection; the cursor makes it resumable."""

    __tablename__ = "reindex_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(128))
    collection: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")
    cursor: Mapped[str] = mapped_column(String(128), default="")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    switched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Faq(Base):
    """An entry of the FAQ knowledge base. The question and every paraphrase are indexed as
    points of the ticket kind's FAQ collection; this row is the source of truth for them."""

    __tablename__ = "faqs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    paraphrases: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    locale: Mapped[str | None] = mapped_column(String(35), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_faqs_updated_at", "updated_at"),)


class MatchCalibration(Base):
    """How match scores map to a confidence, and the threshold that reaches the target precision,
    fitted for one served (encoder, intent head) pair on held-out labeled tickets."""

    __tablename__ = "match_calibrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    encoder_version: Mapped[str] = mapped_column(String(128))
    intent_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    coef: Mapped[list[float]] = mapped_column(JSON)  # logistic: bias, weight of top score, weight of margin
    threshold: Mapped[float] = mapped_column(Float)
    target: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WatchedEntity(Base):
    """A company on the watchlist: news linked to it is aggregated and watched by the alert rules."""

    __tablename__ = "watchlist"

    entity: Mapped[str] = mapped_column(String(64), primary_key=True)  # the id clients use, e.g. "AAPL"
    ticker: Mapped[str | None] = mapped_column(String(16), nullable=True)
    name: Mapped[str] = mapped_column(Text)
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # per-rule overrides of the defaults
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EntityLink(Base):
    """A news event linked to a watched entity, how it was found, and the event's sentiment
    (copied here so aggregates are one GROUP BY)."""

    __tablename__ = "entity_links"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    entity: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))  # producer, ticker, name, alias
    sentiment: Mapped[str | None] = mapped_column(String(16), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # p(positive) - p(negative)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_entity_links_entity_time", "entity", "occurred_at"),)


class SentimentBucket(Base):
    """Per entity and time bucket: counts by sentiment and the summed score (recounted from the
    links, so a re-processed event never counts twice)."""

    __tablename__ = "sentiment_buckets"

    entity: Mapped[str] = mapped_column(String(64), primary_key=True)
    width_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    negative: Mapped[int] = mapped_column(Integer, default=0)
    neutral: Mapped[int] = mapped_column(Integer, default=0)
    positive: Mapped[int] = mapped_column(Integer, default=0)
    score_sum: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Alert(Base):
    """A rule that fired for an entity. One open alert per (entity, rule): enforced by a partial
    unique index, so two workers evaluating at once cannot both open one."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open, acknowledged, cleared
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_alerts_entity_state", "entity", "state"),
        Index(
            "uq_alerts_open",
            "entity",
            "rule",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )


class Webhook(Base):
    """Where alerts are delivered: a URL, the shared secret that signs each body, the event types."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One alert event to one webhook: its idempotency key is unique, so it is queued once; the
    row records every attempt's outcome."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(64))
    alert_id: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)


class Interaction(Base):
    """One thing a user did with an item. The id is derived from (user, item, type, ts) unless the
    client gives one, so a retried request writes nothing twice."""

    __tablename__ = "interactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    item_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_interactions_user_ts", "user_id", "ts"),
        Index("ix_interactions_ts", "ts"),
    )


class ItemStats(Base):
    """An item's positive interactions so far: its popularity."""

    __tablename__ = "item_stats"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    positives: Mapped[float] = mapped_column(Float, default=0.0)
    last_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ItemPair(Base):
    """How often one user interacted positively with both items, close together in their history
    (each new interaction is paired with the user's few latest items: a bounded write)."""

    __tablename__ = "item_pairs"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    other_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    weight: Mapped[float] = mapped_column(Float, default=0.0)

    # (item_id, weight, other_id) read backwards: an item's strongest pairs, ties in a fixed order, no sort.
    __table_args__ = (Index("ix_item_pairs_item_weight", "item_id", "weight", "other_id"),)


class Tenant(Base):
    """A team or customer whose data Sift keeps apart: its tables live in their own schema (SQLite:
    their own file) and its vectors in their own collections. Kept in the main schema only."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """An API key: only its SHA-256 is stored (keys are 256 random bits, so a fast hash is enough).
    The id is the public part of the key, what lists, logs and revocations name."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(32), ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(Text, default="")
    hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_api_keys_tenant", "tenant"),)
