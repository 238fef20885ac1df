"""training runs and model versions of tasks that are not classifiers (the recommender's): their
task no longer has to be a row of tasks

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# PostgreSQL's names for the unnamed foreign keys of 0001 (SQLite does not enforce them).
_KEYS = {"model_versions": "model_versions_task_fkey", "training_runs": "training_runs_task_fkey"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, key in _KEYS.items():
        op.execute(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS "{key}"')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, key in _KEYS.items():
        op.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{key}" FOREIGN KEY (task) REFERENCES tasks (name)')
