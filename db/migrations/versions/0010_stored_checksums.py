"""Honest checksums for payloads stored compressed: ``uploads.stored_size``,
``stored_sha256`` (the stored object's) and ``sha1`` (the content's), so that
``available`` describes the bytes at its URL (core/checksums.py).

Revision ID: 0010
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (("stored_size", sa.BigInteger()), ("stored_sha256", sa.String(64)),
           ("sha1", sa.String(40)))


def upgrade() -> None:
    # 0001 creates the tables as db/schema.py describes them now, these columns included
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("uploads")}
    for name, kind in COLUMNS:
        if name not in present:
            op.add_column("uploads", sa.Column(name, kind))


def downgrade() -> None:
    for name, _ in COLUMNS:
        op.drop_column("uploads", name)
