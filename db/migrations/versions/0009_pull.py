"""Pull sources (pull/): jobs, the remote files seen per provider, provider leases.

Revision ID: 0009
Revises: 0001
"""
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('queued', 'running')")


def _at(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "pull_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("listed", sa.Boolean, nullable=False),
        sa.Column("files_skipped", sa.Integer, nullable=False),
        sa.Column("files_unchanged", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        _at("created_at"), _at("started_at", True), _at("finished_at", True), _at("updated_at"),
    )
    # at most one queued or running job per provider
    op.create_index("ix_pull_jobs_active", "pull_jobs", ["provider"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_index("ix_pull_jobs_created", "pull_jobs", ["created_at"])
    op.create_index("ix_pull_jobs_provider_created", "pull_jobs", ["provider", "created_at"])
    op.create_table(
        "pull_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("request_ids", sa.Text),
        sa.Column("error", sa.String(32)),
        sa.Column("message", sa.Text),
        sa.Column("disposal", sa.String(16)),
        _at("created_at"), _at("updated_at"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_pull_files_key", "pull_files", ["key"], unique=True)
    op.create_index("ix_pull_files_job", "pull_files", ["job_id", "state"])
    op.create_table(
        "pull_leases",
        sa.Column("provider", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        _at("expires_at"),
    )


def downgrade() -> None:
    op.drop_table("pull_leases")
    op.drop_table("pull_files")
    op.drop_table("pull_jobs")
