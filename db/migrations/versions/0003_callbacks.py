"""Used callback codes (core/callbacks.py): one row per code that decided an upload.

Revision ID: 0003
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_codes",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("validation", sa.String(16), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_callback_codes_request", "callback_codes", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_callback_codes_request", "callback_codes")
    op.drop_table("callback_codes")
