"""Resumable (tus) uploads in the database: their rows, the lease that serialises writers
across gateways, checkpoints, and the transaction that turns a complete one into a
stored upload (a mixin of ``Database``, like ``db.outbox``).

A row's ``state``: ``receiving`` (bytes may come), ``complete`` (every byte checkpointed,
the payload not recorded yet: whoever holds the lease next records it), ``done``,
``terminated``, ``expired``. A single or final upload also has an ``uploads`` row from
its creation (status ``created``, then ``receiving``, then ``stored`` with the rest of
the ingest path), so its request_id is in the status API from the start.

The lease: ``lease_owner`` (a random token per request) until ``lease_until``. Taking it
succeeds only when it is free or expired; renewing, checkpointing and finishing succeed
only for its owner, so a holder that lost it (it died, or stalled past the expiry while
another request took over) can no longer record anything.
"""
from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any, Callable, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)

from db.engine import utcnow
from db.outbox import OutboxItem
from db.schema import uploads

# Created by migration 0008 (not by 0001's create_all of db.schema).
tus_metadata = MetaData()
# Resumable (tus) uploads (db/tus.py). ``state``: receiving (bytes may come), complete (all
# bytes checkpointed, the payload not yet recorded), done, terminated, expired.
tus_uploads = Table(
    "tus_uploads",
    tus_metadata,
    Column("id", String(64), primary_key=True),
    Column("request_id", String(64)),
    Column("kind", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("upload_length", BigInteger),
    Column("upload_offset", BigInteger, nullable=False),
    Column("upload_metadata", Text),
    Column("concat", Text),
    Column("payload", Text, nullable=False),
    Column("account", String(64)),
    Column("org_id", String(64)),
    Column("object_key", String(255), nullable=False),
    Column("storage_state", Text, nullable=False),
    Column("hash_state", LargeBinary),
    Column("head", LargeBinary),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_tus_uploads_state_expires", "state", "expires_at"),
    Index("ix_tus_uploads_object_key", "object_key"),
)

t = tus_uploads
OPEN_STATES = ("receiving", "complete")
_FREE = or_(t.c.lease_owner.is_(None), t.c.lease_until < bindparam("now"))
_MINE = and_(t.c.id == bindparam("tid"), t.c.lease_owner == bindparam("token"))


class TusQueries:
    """Queries on ``tus_uploads``; mixed into ``db.Database``, whose transactions,
    timeline and outbox helpers it uses."""

    engine: Any
    _begin: Callable[..., AbstractContextManager[Connection]]
    _advance: Callable[[Connection, str, str, str | None], bool]
    _event: Callable[[Connection, str, str, str | None], bool]
    _enqueue: Callable[[Connection, Sequence[OutboxItem]], None]
    _status_item: Callable[[dict[str, Any], str, str], OutboxItem]

    def create_tus(self, row: dict[str, Any], upload: dict[str, Any] | None) -> None:
        """Insert a new upload, leased to ``row["lease_owner"]`` when it names one, and
        for a single or final one its ``uploads`` row (status ``created``). A request id
        already used raises ``IntegrityError``."""
        now = utcnow()
        with self._begin() as conn:
            if upload is not None:
                record = {**upload, "status": "created", "created_at": now, "updated_at": now}
                conn.execute(insert(uploads), [record])
                self._event(conn, upload["request_id"], "created", None)
                self._enqueue(conn, [self._status_item(record, "created", "created")])
            conn.execute(insert(t), [{**row, "created_at": now, "updated_at": now}])

    def get_tus(self, tus_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = conn.execute(select(t).where(t.c.id == tus_id)).mappings().first()
        return dict(found) if found else None

    def get_tus_many(self, tus_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(tus_ids), 500):
                query = select(t).where(t.c.id.in_(list(tus_ids[start:start + 500])))
                found.update((r["id"], dict(r)) for r in conn.execute(query).mappings())
        return found

    def acquire_tus(self, tus_id: str, token: str, ttl: float,
                    states: Sequence[str] = OPEN_STATES) -> dict[str, Any] | None:
        """Take the lease of an upload in one of ``states``; its row, or None when it is
        held by another request (or not in those states)."""
        now = utcnow()
        statement = (update(t).where(t.c.id == tus_id).where(t.c.state.in_(list(states)))
                     .where(_FREE)
                     .values(lease_owner=token, lease_until=now + dt.timedelta(seconds=ttl))
                     .returning(*t.c))
        with self._begin() as conn:
            found = conn.execute(statement, {"now": now}).mappings().first()
        return dict(found) if found else None

    def renew_tus(self, tus_id: str, token: str, ttl: float) -> bool:
        until = utcnow() + dt.timedelta(seconds=ttl)
        with self._begin() as conn:
            result = conn.execute(update(t).where(_MINE).values(lease_until=until),
                                  {"tid": tus_id, "token": token})
        return bool(result.rowcount)

    def release_tus(self, tus_id: str, token: str) -> None:
        with self._begin() as conn:
            conn.execute(update(t).where(_MINE).values(lease_owner=None, lease_until=None),
                         {"tid": tus_id, "token": token})

    def checkpoint_tus(self, tus_id: str, token: str, before: int, values: dict[str, Any],
                       release: bool) -> bool:
        """Record a checkpoint (``upload_offset``, ``storage_state``, ``hash_state``,
        ``head``, ``upload_length``, ``expires_at``, ``state``) if the lease is still
        ``token``'s and the offset is still ``before``. The first bytes of a single or
        final upload move it to ``receiving``."""
        changes = {**values, "updated_at": utcnow()}
        if release:
            changes.update(lease_owner=None, lease_until=None)
        statement = (update(t).where(_MINE).where(t.c.upload_offset == before)
                     .values(**changes).returning(t.c.request_id, t.c.kind))
        with self._begin() as conn:
            found = conn.execute(statement, {"tid": tus_id, "token": token}).first()
            if found is None:
                return False
            if found.request_id and before == 0 and values.get("upload_offset", 0) > 0:
                self._advance(conn, found.request_id, "receiving", None)
        return True

    def finish_tus(self, tus_id: str, token: str, upload: dict[str, Any] | None,
                   messages: Sequence[OutboxItem]) -> bool:
        """A complete upload becomes ``done``: for a single or final one, in the same
        transaction, its ``uploads`` row becomes the stored upload (``upload``: size,
        sha256, mime, ...), with its timeline and ``messages`` (the announcement) in the
        outbox. False when the lease is no longer ``token``'s or it is done already."""
        now = utcnow()
        with self._begin() as conn:
            done = conn.execute(
                update(t).where(_MINE).where(t.c.state == "complete")
                .values(state="done", lease_owner=None, lease_until=None, updated_at=now,
                        hash_state=None, head=None),
                {"tid": tus_id, "token": token})
            if not done.rowcount:
                return False
            if upload is not None:
                rid = upload["request_id"]
                stored = conn.execute(
                    update(uploads).where(uploads.c.request_id == rid)
                    .where(uploads.c.status.in_(("created", "receiving")))
                    .values(**upload, status="stored", updated_at=now)
                    .returning(*uploads.c)).mappings().first()
                if stored is None:
                    raise LookupError(f"request_id={rid} has no upload waiting for its bytes")
                self._event(conn, rid, "stored", None)
                self._enqueue(conn, [*messages,
                                     self._status_item(dict(stored), "stored",
                                                       "stored in quarantine")])
        return True

    def end_tus(self, tus_id: str, token: str, state: str, message: str) -> bool:
        """Terminate or expire an upload whose lease ``token`` holds (``state``:
        ``terminated`` or ``expired``); its ``uploads`` row, if any, says so too."""
        now = utcnow()
        with self._begin() as conn:
            found = conn.execute(
                update(t).where(_MINE)
                .values(state=state, lease_owner=None, lease_until=None, updated_at=now,
                        hash_state=None, head=None)
                .returning(t.c.request_id, t.c.kind),
                {"tid": tus_id, "token": token}).first()
            if found is None:
                return False
            if found.request_id and found.kind != "partial":
                ended = conn.execute(
                    update(uploads).where(uploads.c.request_id == found.request_id)
                    .where(uploads.c.status.in_(("created", "receiving")))
                    .values(status=state, reason=message, updated_at=now)
                    .returning(*uploads.c)).mappings().first()
                if ended is not None:
                    self._event(conn, found.request_id, state, message)
                    self._enqueue(conn, [self._status_item(dict(ended), state, message)])
        return True

    def tus_due(self, now: dt.datetime, stale_before: dt.datetime,
                limit: int = 100) -> list[dict[str, Any]]:
        """Rows the sweeper has work on: expired ones still open (receiving, or a done
        partial nobody concatenated), and complete or final ones left unfinished by a
        request that went away (lease free, untouched since ``stale_before``)."""
        free = or_(t.c.lease_owner.is_(None), t.c.lease_until < now)
        expired = and_(t.c.expires_at < now,
                       or_(t.c.state == "receiving",
                           and_(t.c.kind == "partial", t.c.state == "done")))
        stuck = and_(t.c.updated_at < stale_before,
                     or_(t.c.state == "complete",
                         and_(t.c.kind == "final", t.c.state == "receiving")))
        query = select(t).where(free).where(or_(expired, stuck)).order_by(t.c.expires_at)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.limit(limit)).mappings()]

    def live_tus_keys(self, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` an open upload (or an unconsumed done partial) owns."""
        live = or_(t.c.state.in_(OPEN_STATES), and_(t.c.kind == "partial", t.c.state == "done"))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                query = (select(t.c.object_key).where(live)
                         .where(t.c.object_key.in_(list(keys[start:start + 500]))))
                found.update(conn.execute(query).scalars())
        return found
