"""training runs: a lease (holder, expiry) so a re-delivered message does not train a live run again

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_runs", sa.Column("lease_holder", sa.String(128), nullable=True))
    op.add_column("training_runs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("training_runs", "lease_expires_at")
    op.drop_column("training_runs", "lease_holder")
