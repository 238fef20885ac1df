"""an index for a kind's newest done events (the recommender's newest items): without it the read
sorts every done event of the kind (40 ms at 10,000 items, seconds at a million); with it, 0.1 ms

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_kind_status_processed", "events", ["kind", "status", "processed_at"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_status_processed", table_name="events")
