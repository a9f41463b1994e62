"""``outbox.sent_since``: when a relay first claimed a message that nobody has recorded
as sent or as failed since. A relay that claims a message with ``sent_since`` set looks on
the bus for it (from that moment) before sending it again: its earlier claimer may have
died between the broker's acknowledgement and recording it (core/relay.py).

Revision ID: 0012
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 creates the tables as db/schema.py describes them now, this column included
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("outbox")}
    if "sent_since" not in columns:
        op.add_column("outbox", sa.Column("sent_since", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("outbox", "sent_since")
