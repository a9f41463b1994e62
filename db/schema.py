"""Tables, described once for queries; db/migrations creates and evolves them."""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

uploads = Table(
    "uploads",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("service", String(64), nullable=False),
    Column("category", String(128), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("filename", Text),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("mime", String(255)),
    Column("account", String(64)),
    Column("org_id", String(64)),
    Column("principal", String(255)),
    Column("b64_identity", Text),
    Column("metadata", Text),
    Column("source", String(16), nullable=False),
    Column("compression", String(16)),
    # stored compressed (migration 0010): the stored object's size and sha256, and the
    # content's sha1; size and sha256 above are the content's (core/checksums.py)
    Column("stored_size", BigInteger),
    Column("stored_sha256", String(64)),
    Column("sha1", String(40)),
    Column("object_key", String(255), nullable=False),
    Column("bucket", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("verdict", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_uploads_status_created", "status", "created_at"),
)

upload_events = Table(
    "upload_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_upload_events_request", "request_id", "status", unique=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255)),
    Column("value", LargeBinary, nullable=False),
    Column("request_id", String(64)),
    Column("on_sent_status", String(16)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_until", DateTime(timezone=True)),
    Column("claimed_by", String(64)),
    Column("last_error", Text),
    # the bus refused the message for good (migration 0004); last_error says why
    Column("parked_at", DateTime(timezone=True)),
    # a relay claimed the message then and may have sent it without recording so (it died
    # between the broker's acknowledgement and its next pass); the next claimer looks on
    # the bus before sending it again (migration 0012, core/relay.py)
    Column("sent_since", DateTime(timezone=True)),
    # ids are never reused: a repeated "delete these sent ids" must not hit new rows
    sqlite_autoincrement=True,
)
