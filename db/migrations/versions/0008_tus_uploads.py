"""Resumable (tus) uploads: one row per upload while it is written, then kept (done,
terminated, expired) so that its URL answers 410 instead of 404.

Revision ID: 0008
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tus_uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64)),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("upload_length", sa.BigInteger),
        sa.Column("upload_offset", sa.BigInteger, nullable=False),
        sa.Column("upload_metadata", sa.Text),
        sa.Column("concat", sa.Text),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("account", sa.String(64)),
        sa.Column("org_id", sa.String(64)),
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("storage_state", sa.Text, nullable=False),
        sa.Column("hash_state", sa.LargeBinary),
        sa.Column("head", sa.LargeBinary),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tus_uploads_state_expires", "tus_uploads", ["state", "expires_at"])
    op.create_index("ix_tus_uploads_object_key", "tus_uploads", ["object_key"])


def downgrade() -> None:
    op.drop_index("ix_tus_uploads_object_key", "tus_uploads")
    op.drop_index("ix_tus_uploads_state_expires", "tus_uploads")
    op.drop_table("tus_uploads")
