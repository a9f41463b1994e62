"""The upload areas' tables (created by migration 0011), on their own ``MetaData``.

- ``areas``: one row per area (its id is the client's UUID). ``state``: ``open``,
  ``locked`` (accepts no files), ``deleting`` (its files are being removed), ``deleted``,
  ``submitted``. ``max_file_size``: each file's limit (default ``MAX_LENGTH``).
- ``area_files``: one row per file name in an area, the current version of it. Every
  new upload of a name is a new object (``object_key``) and bumps ``version``, so a
  checksum or a validation of an earlier version can never be recorded for this one.
  ``checksum_state``: ``checksumming``, ``checksummed``, ``checksum_mismatch``;
  ``validation_state``: ``unvalidated``, ``validating``, ``valid``, ``invalid``.
  ``checksums``: JSON ``{sha1, sha256, crc32c, s3_etag}`` once checksummed;
  ``declared``: JSON of what the client declared (``sha256``, ``crc32c``).
- ``area_uploads``: direct uploads in progress (``storage_state`` is the driver's);
  removed at completion or abort.
- ``area_validations``: one row per ``PUT .../validate``: the validator, the files (names
  and versions, in order), ``state`` (``scheduled``, ``validating``, ``valid``,
  ``invalid``, ``stale``: a file changed meanwhile), exit code, output tails, duration.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

areas = Table(
    "areas",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("max_file_size", BigInteger, nullable=False),
    Column("submitted", Text),  # JSON: the request ids of the files submitted
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

area_files = Table(
    "area_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("area_id", String(36), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("version", Integer, nullable=False),
    Column("object_key", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("part_size", BigInteger, nullable=False),
    Column("declared", Text, nullable=False),
    Column("checksums", Text),
    Column("checksum_state", String(24), nullable=False),
    Column("validation_state", String(16), nullable=False),
    Column("validation_id", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_area_files_name", "area_id", "name", unique=True),
)

area_uploads = Table(
    "area_uploads",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("area_id", String(36), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("object_key", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("part_size", BigInteger, nullable=False),
    Column("declared", Text, nullable=False),
    Column("storage_state", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_area_uploads_area", "area_id"),
)

area_validations = Table(
    "area_validations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("area_id", String(36), nullable=False),
    Column("validator", String(64), nullable=False),
    Column("files", Text, nullable=False),  # JSON [[name, version], ...]
    Column("state", String(16), nullable=False),
    Column("exit_code", Integer),
    Column("stdout_tail", Text),
    Column("stderr_tail", Text),
    Column("duration_seconds", BigInteger),  # milliseconds, see areas/store.py
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_area_validations_area", "area_id"),
)
