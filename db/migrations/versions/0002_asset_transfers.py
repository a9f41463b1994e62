"""Asset transfers, treatment plans and their bundles (treatment-plan assets).

Revision ID: 0002
Revises: 0001
"""
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamps(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.DateTime(timezone=True), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "asset_transfers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("case_number", sa.String(64)),
        sa.Column("step", sa.Integer),
        sa.Column("type", sa.String(16)),
        sa.Column("unmatched_reason", sa.Text),
        sa.Column("request_id", sa.String(64)),
        sa.Column("is_created", sa.Boolean, nullable=False),
        sa.Column("is_uploaded", sa.Boolean, nullable=False),
        sa.Column("treatment_plan_uuid", sa.String(36)),
        sa.Column("associated_by", sa.String(255)),
        *_timestamps("associated_at", nullable=True),
        sa.Column("bundle_version", sa.Integer),
        *_timestamps("created_at", "updated_at"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_asset_transfers_sha1", "asset_transfers", ["sha1"], unique=True)
    op.create_index("ix_asset_transfers_case", "asset_transfers", ["case_number", "step"])
    op.create_index("ix_asset_transfers_request", "asset_transfers", ["request_id"])
    op.create_index("ix_asset_transfers_plan", "asset_transfers", ["treatment_plan_uuid"])
    op.create_table(
        "treatment_plans",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("pending", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        *_timestamps("retry_at", nullable=True),
        *_timestamps("created_at", "updated_at"),
    )
    op.create_index("ix_treatment_plans_pending", "treatment_plans", ["pending"])
    op.create_table(
        "treatment_plan_assets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("plan_uuid", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("content_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("file_count", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("claimed_by", sa.String(64)),
        *_timestamps("claimed_until", nullable=True),
        *_timestamps("created_at"),
        *_timestamps("completed_at", nullable=True),
        sa.UniqueConstraint("plan_uuid", "version", name="uq_plan_assets_version"),
        sa.UniqueConstraint("plan_uuid", "content_key", name="uq_plan_assets_content"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("treatment_plan_assets")
    op.drop_table("treatment_plans")
    op.drop_table("asset_transfers")
