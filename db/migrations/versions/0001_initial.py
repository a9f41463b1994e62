"""Uploads, their status timeline, and the outbox.

Revision ID: 0001
"""
from alembic import op

from db.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision creates the tables exactly as db/schema.py describes them;
    # later revisions use op.add_column and friends.
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
