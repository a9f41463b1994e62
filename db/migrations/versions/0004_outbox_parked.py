"""Parked outbox messages: ``outbox.parked_at``, set when the bus refused a message for
good (too large, invalid); the relay claims only unparked ones (core/relay.py).

Revision ID: 0004
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 creates the tables as db/schema.py describes them now, parked_at included: a
    # database created by it has the column already.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("outbox")}
    if "parked_at" not in columns:
        op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("outbox", "parked_at")
