"""classification: tasks, versioned labels, the model registry, training runs, kind aliases, re-index jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SENTIMENT_LABELS = [
    {"name": "negative", "description": "bad news for the company: losses, falling sales, layoffs, a lower forecast"},
    {"name": "neutral", "description": "a plain statement of fact about the company, neither good nor bad"},
    {"name": "positive", "description": "good news for the company: profit, growth, higher sales, a new contract"},
]


def upgrade() -> None:
    tasks = op.create_table(
        "tasks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("open_labels", sa.Boolean(), nullable=False),
        sa.Column("fine_tune", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(64), sa.ForeignKey("tasks.name"), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
    )
    op.create_index("ix_labels_task_current", "labels", ["task", "superseded_by", "id"])
    op.create_index("ix_labels_event_task", "labels", ["event_id", "task"])
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(128), primary_key=True),
        sa.Column("task", sa.String(64), sa.ForeignKey("tasks.name"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("encoder_version", sa.String(128), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_model_versions_task_status", "model_versions", ["task", "status"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("task", sa.String(64), sa.ForeignKey("tasks.name"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("label_count", sa.Integer(), nullable=False),
        sa.Column("max_label_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_training_runs_task_created", "training_runs", ["task", "created_at"])
    op.create_table(
        "kind_encoders",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("encoder_version", sa.String(128), nullable=False),
        sa.Column("encoder_path", sa.Text(), nullable=True),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "reindex_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cursor", sa.String(128), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        tasks,
        [
            {
                "name": "sentiment",
                "kind": "news",
                "labels": SENTIMENT_LABELS,
                "open_labels": False,
                "fine_tune": True,
                "created_at": now,
            },
            {
                "name": "intent",
                "kind": "ticket",
                "labels": [],
                "open_labels": True,
                "fine_tune": True,
                "created_at": now,
            },
            {
                "name": "category",
                "kind": "product",
                "labels": [],
                "open_labels": True,
                "fine_tune": True,
                "created_at": now,
            },
        ],
    )


def downgrade() -> None:
    for table in ("reindex_jobs", "kind_encoders", "training_runs", "model_versions", "labels", "tasks"):
        op.drop_table(table)
