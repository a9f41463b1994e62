"""Pull downloads checkpoint their quarantine object: ``pull_files.resume_state`` holds
the resumable object's key, its storage state, the running hash state and the payload's
head at the last checkpoint (pull/download.py ``ObjectPart``), so a download resumes into
the object itself and each byte is written once.

Revision ID: 0013
Revises: 0001 (after 0009, which creates ``pull_files``)
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0001"
branch_labels = None
# the table is 0009's: on a new database its branch must have run first
depends_on = "0009"


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("pull_files")}
    if "resume_state" not in columns:
        op.add_column("pull_files", sa.Column("resume_state", sa.Text))


def downgrade() -> None:
    op.drop_column("pull_files", "resume_state")
