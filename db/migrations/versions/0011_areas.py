"""Upload areas (areas/): areas, their files, direct uploads in progress, validations
(tables described in areas/schema.py).

Revision ID: 0011
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0001"
branch_labels = None
depends_on = None


def _at(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "areas",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("max_file_size", sa.BigInteger, nullable=False),
        sa.Column("submitted", sa.Text),
        _at("created_at"), _at("updated_at"),
    )
    op.create_table(
        "area_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("area_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("declared", sa.Text, nullable=False),
        sa.Column("checksums", sa.Text),
        sa.Column("checksum_state", sa.String(24), nullable=False),
        sa.Column("validation_state", sa.String(16), nullable=False),
        sa.Column("validation_id", sa.String(32)),
        _at("created_at"), _at("updated_at"),
    )
    op.create_index("ix_area_files_name", "area_files", ["area_id", "name"], unique=True)
    op.create_table(
        "area_uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("area_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("declared", sa.Text, nullable=False),
        sa.Column("storage_state", sa.Text, nullable=False),
        _at("created_at"),
    )
    op.create_index("ix_area_uploads_area", "area_uploads", ["area_id"])
    op.create_table(
        "area_validations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("area_id", sa.String(36), nullable=False),
        sa.Column("validator", sa.String(64), nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("stdout_tail", sa.Text),
        sa.Column("stderr_tail", sa.Text),
        sa.Column("duration_seconds", sa.BigInteger),
        sa.Column("reason", sa.Text),
        _at("created_at"), _at("updated_at"),
    )
    op.create_index("ix_area_validations_area", "area_validations", ["area_id"])


def downgrade() -> None:
    op.drop_table("area_validations")
    op.drop_table("area_uploads")
    op.drop_table("area_files")
    op.drop_table("areas")
