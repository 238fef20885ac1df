"""point ids from the tenant and the exact event id: recompute them, and mark the points to move

An event's point id used to be the event id parsed as a UUID (so `{…}`, `urn:uuid:…`, hex and case
variants of one UUID shared a point), else a uuid5 of the id. Now it is uuid5 of the tenant and
the exact id. This recomputes every row's point_id and keeps the old one in moved_from_point until
the process that owns the vector store has moved the point (services/events/reidentify.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen copy of services.db.events.point_id_for: a migration must not change when the code does.
POINT_NAMESPACE = uuid.UUID("0d4c7f38-2a5e-5b7a-9e11-3c8b1f6a4d20")
PAGE = 5000


def upgrade() -> None:
    tenant = context.config.attributes.get("tenant") or "default"
    op.add_column("events", sa.Column("moved_from_point", sa.String(36), nullable=True))
    op.create_index("ix_events_moved_from_point", "events", ["moved_from_point"])
    events = sa.table(
        "events",
        sa.column("id", sa.String),
        sa.column("point_id", sa.String),
        sa.column("moved_from_point", sa.String),
    )
    connection = op.get_bind()
    statement = (
        events.update()
        .where(events.c.id == sa.bindparam("key"))
        .values(point_id=sa.bindparam("new"), moved_from_point=sa.bindparam("old"))
    )
    last = ""
    while True:  # by pages of ids, so a large table is never held in memory at once
        query = sa.select(events.c.id, events.c.point_id).where(events.c.id > last).order_by(events.c.id).limit(PAGE)
        rows = connection.execute(query).all()
        if not rows:
            break
        changed = []
        for event_id, old in rows:
            new = str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x00{event_id}"))
            if new != old:
                changed.append({"key": event_id, "new": new, "old": old})
        if changed:
            connection.execute(statement, changed)
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_events_moved_from_point", "events")
    op.drop_column("events", "moved_from_point")
