"""recommendation feeds: interactions, item popularity, co-interaction pairs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "interactions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("ts", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_interactions_user_ts", "interactions", ["user_id", "ts"])
    op.create_index("ix_interactions_ts", "interactions", ["ts"])
    op.create_table(
        "item_stats",
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("positives", sa.Float(), nullable=False),
        sa.Column("last_ts", TZ, nullable=False),
    )
    op.create_table(
        "item_pairs",
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("other_id", sa.String(128), primary_key=True),
        sa.Column("weight", sa.Float(), nullable=False),
    )
    op.create_index("ix_item_pairs_item_weight", "item_pairs", ["item_id", "weight", "other_id"])


def downgrade() -> None:
    for table in ("item_pairs", "item_stats", "interactions"):
        op.drop_table(table)
