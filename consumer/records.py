"""Asset transfer records: the tables of the bundler, and the queries about transfers.

One ``asset_transfers`` row per distinct content hash (``uncompressed_sha1_hash``), created
by whichever of ``file_created``/``file_uploaded`` comes first and completed by the other.
Its validation state is not copied from an event: it is the state of its upload
(``uploads.status`` of ``request_id``), which the gateway decides once. ``validated`` and
``available`` read as ``valid``, ``rejected`` as ``invalid``, anything else as ``pending``.

``treatment_plans.pending`` says that something a plan depends on changed since the plan
was last checked; every change bumps ``revision`` in the transaction that records the
fact, and a check clears ``pending`` only if ``revision`` is still the one it read. So a
change that races a check is never lost (see ``consumer.plans``).

Tables live on their own ``MetaData`` and are created by migration 0002.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    case,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from consumer.naming import ParsedName
from db import as_utc, utcnow
from db.schema import uploads

metadata = MetaData()

asset_transfers = Table(
    "asset_transfers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha1", String(40), nullable=False),
    Column("file_name", Text, nullable=False),
    Column("case_number", String(64)),
    Column("step", Integer),
    Column("type", String(16)),
    Column("unmatched_reason", Text),
    Column("request_id", String(64)),
    Column("is_created", Boolean, nullable=False),
    Column("is_uploaded", Boolean, nullable=False),
    Column("treatment_plan_uuid", String(36)),
    Column("associated_by", String(255)),
    Column("associated_at", DateTime(timezone=True)),
    Column("bundle_version", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_asset_transfers_sha1", "sha1", unique=True),
    Index("ix_asset_transfers_case", "case_number", "step"),
    Index("ix_asset_transfers_request", "request_id"),
    Index("ix_asset_transfers_plan", "treatment_plan_uuid"),
    sqlite_autoincrement=True,
)

treatment_plans = Table(
    "treatment_plans",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("pending", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("retry_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_treatment_plans_pending", "pending"),
)

treatment_plan_assets = Table(
    "treatment_plan_assets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan_uuid", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("content_key", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("object_key", String(255), nullable=False),
    Column("sha256", String(64)),
    Column("size", BigInteger),
    Column("file_count", Integer),
    Column("error", Text),
    Column("claimed_by", String(64)),
    Column("claimed_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    UniqueConstraint("plan_uuid", "version", name="uq_plan_assets_version"),
    UniqueConstraint("plan_uuid", "content_key", name="uq_plan_assets_content"),
    sqlite_autoincrement=True,
)

VALID_UPLOAD = ("validated", "available")
STATUSES = ("unmatched", "invalid", "bundled", "associated", "ready", "uploaded", "created")

t, u = asset_transfers, uploads
VALIDATION = case(
    (u.c.status.in_(VALID_UPLOAD), "valid"), (u.c.status == "rejected", "invalid"), else_="pending"
)
STATUS = case(
    (t.c.unmatched_reason.is_not(None), "unmatched"),
    (u.c.status == "rejected", "invalid"),
    (t.c.bundle_version.is_not(None), "bundled"),
    (t.c.treatment_plan_uuid.is_not(None), "associated"),
    (and_(t.c.is_uploaded, u.c.status.in_(VALID_UPLOAD)), "ready"),
    (t.c.is_uploaded, "uploaded"),
    else_="created",
)
TRANSFER_COLUMNS = (*t.c, VALIDATION.label("validation"), u.c.reason.label("validation_reason"),
                    STATUS.label("status"))


def insert_ignore(conn: Connection, table: Table, values: dict[str, Any], keys: Sequence[str]) -> int:
    """INSERT … ON CONFLICT DO NOTHING (SQLite and PostgreSQL); returns rows inserted
    (counted through RETURNING: psycopg reports no rowcount for this statement)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
                 .returning(*(table.c[key] for key in keys)))
    return len(conn.execute(statement).all())


def mark_pending(conn: Connection, plan_uuid: str) -> None:
    """Something ``plan_uuid`` depends on changed: check it again (in the caller's
    transaction, with the change)."""
    conn.execute(
        update(treatment_plans)
        .where(treatment_plans.c.uuid == plan_uuid)
        .values(pending=True, revision=treatment_plans.c.revision + 1, attempts=0,
                retry_at=None, updated_at=utcnow())
    )


def transfer_query() -> Any:
    return select(*TRANSFER_COLUMNS).select_from(t.outerjoin(u, u.c.request_id == t.c.request_id))


def transfer_document(row: Any) -> dict[str, Any]:
    """The JSON view of one transfer row (from ``transfer_query``)."""
    doc = {key: row._mapping[key] for key in (
        "id", "file_name", "case_number", "step", "type", "sha1", "request_id", "is_created",
        "is_uploaded", "validation", "validation_reason", "status", "unmatched_reason",
        "treatment_plan_uuid", "associated_by", "bundle_version")}
    doc["is_created"], doc["is_uploaded"] = bool(doc["is_created"]), bool(doc["is_uploaded"])
    if doc["validation"] != "invalid":
        doc["validation_reason"] = None
    for key in ("associated_at", "created_at", "updated_at"):
        value: dt.datetime | None = row._mapping[key]
        doc[key] = as_utc(value).isoformat() if value else None
    return doc


def list_transfers(conn: Connection, case_number: str | None, statuses: Sequence[str],
                   plan_uuid: str | None = None, limit: int = 500,
                   org_id: str | None = None) -> list[dict[str, Any]]:
    """``org_id``: only the transfers whose upload was made by that org (a staff user of
    an org sees nothing else)."""
    query = transfer_query()
    if org_id is not None:
        query = query.where(u.c.org_id == org_id)
    if case_number is not None:
        query = query.where(t.c.case_number == case_number)
    if plan_uuid is not None:
        query = query.where(t.c.treatment_plan_uuid == plan_uuid)
    if statuses:
        query = query.where(STATUS.in_(list(statuses)))
    query = query.order_by(t.c.case_number, t.c.step, t.c.file_name, t.c.id).limit(limit)
    return [transfer_document(row) for row in conn.execute(query)]


# writes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferEvent:
    """``sdc_asset_transfer_file_created`` (kind ``created``) or ``…_file_uploaded``."""

    kind: str
    file_name: str
    sha1: str
    request_id: str | None


def record_event(conn: Connection, event: TransferEvent, parsed: ParsedName) -> tuple[bool, str | None]:
    """Record a file event (idempotent). Returns whether anything changed and the plan it
    touched (marked pending in this transaction), if any."""
    now = utcnow()
    named = {"file_name": event.file_name, "case_number": parsed.case_number, "step": parsed.step,
             "type": parsed.type, "unmatched_reason": parsed.unmatched_reason}
    created = event.kind == "created"
    if insert_ignore(conn, t, {**named, "sha1": event.sha1, "request_id": event.request_id,
                               "is_created": created, "is_uploaded": not created,
                               "created_at": now, "updated_at": now}, ["sha1"]):
        return True, None
    flag = t.c.is_created if created else t.c.is_uploaded
    # the created event names the file (seed); the row lock taken here orders this event
    # against a concurrent association of the same transfer
    values = {flag.key: True, "updated_at": now, **(named if created else {})}
    changed = bool(conn.execute(update(t).where(t.c.sha1 == event.sha1, flag.is_(False))
                                .values(**values)).rowcount)
    row = conn.execute(select(t.c.id, t.c.request_id, t.c.treatment_plan_uuid)
                       .where(t.c.sha1 == event.sha1)).one()
    if _takes_request_id(conn, row.request_id, event, first_upload=changed and not created):
        conn.execute(update(t).where(t.c.id == row.id)
                     .values(request_id=event.request_id, updated_at=now))
        changed = True
    if changed and row.treatment_plan_uuid:
        mark_pending(conn, row.treatment_plan_uuid)
    return changed, row.treatment_plan_uuid


def _takes_request_id(conn: Connection, current: str | None, event: TransferEvent,
                      first_upload: bool) -> bool:
    """The upload that holds the content is the one named by the (first) uploaded event;
    a later upload of the same content replaces it only if that one was rejected."""
    if event.request_id is None or event.request_id == current:
        return False
    if current is None or first_upload:
        return True
    if event.kind != "uploaded":
        return False
    status = conn.execute(select(u.c.status).where(u.c.request_id == current)).scalar()
    return status in (None, "rejected")


def touch_plans_of_request(conn: Connection, request_id: str) -> list[str]:
    """The upload ``request_id`` changed state: mark the plans of its transfers pending."""
    plans = list(conn.execute(
        select(t.c.treatment_plan_uuid).distinct()
        .where(t.c.request_id == request_id, t.c.treatment_plan_uuid.is_not(None))
    ).scalars())
    for plan_uuid in plans:
        mark_pending(conn, plan_uuid)
    return plans
