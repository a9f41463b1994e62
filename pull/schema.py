"""The puller's tables (created by migration 0009), on their own ``MetaData``.

- ``pull_jobs``: one row per job. At most one job per provider is ``queued`` or
  ``running`` (a partial unique index: a second POST gets 409, two pullers cannot both
  start one). ``listed`` says its listing is recorded, so a restarted puller continues the
  job instead of listing again.
- ``pull_files``: one row per remote file version seen, keyed by provider, path, size and
  mtime (``key``, a hash of the four): what makes a run incremental. ``bytes_done`` is the
  download's last checkpoint (the incomplete file or object holds at least that much,
  durably); ``resume_state`` (JSON, migration 0013) what a download into a resumable
  quarantine object needs to continue from it (object key, storage and hash state, head),
  cleared when the file is finished;
  ``job_id`` the job working or last worked on it. States: ``pending`` (to fetch),
  ``ingested``, ``duplicate`` (content already ingested from this provider), ``failed``
  (``error``/``message`` say why), ``changed`` (the file changed while it was fetched;
  its new version is another row).
- ``pull_leases``: which process works a provider, until when.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

ACTIVE = ("queued", "running")
FINAL_FILE_STATES = ("ingested", "duplicate", "failed", "changed")
_ACTIVE_WHERE = text("state IN ('queued', 'running')")

pull_jobs = Table(
    "pull_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("reason", Text),
    Column("listed", Boolean, nullable=False),
    Column("files_skipped", Integer, nullable=False),
    Column("files_unchanged", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_pull_jobs_active", "provider", unique=True, sqlite_where=_ACTIVE_WHERE,
          postgresql_where=_ACTIVE_WHERE),
    Index("ix_pull_jobs_created", "created_at"),
    Index("ix_pull_jobs_provider_created", "provider", "created_at"),
)

pull_files = Table(
    "pull_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime", BigInteger, nullable=False),
    Column("job_id", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("bytes_done", BigInteger, nullable=False),
    Column("resume_state", Text),  # migration 0013
    Column("sha256", String(64)),
    Column("request_ids", Text),
    Column("error", String(32)),
    Column("message", Text),
    Column("disposal", String(16)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_pull_files_key", "key", unique=True),
    Index("ix_pull_files_job", "job_id", "state"),
    sqlite_autoincrement=True,
)

pull_leases = Table(
    "pull_leases",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
