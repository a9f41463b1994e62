"""The outbox: messages recorded in the transaction of the facts they announce, leased
to the relay in batches, deleted once the bus has them (see ``core.relay``)."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import Connection, DateTime, bindparam, func, insert, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import Engine

from db.engine import as_utc, utcnow
from db.presence import FileRelayPresence, Presence, RelayPresence
from db.schema import outbox

_INSERT_OUTBOX = insert(outbox)
_DELETE_OUTBOX = sql_delete(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
_FREE = outbox.c.parked_at.is_(None) & (
    outbox.c.claimed_until.is_(None) | (outbox.c.claimed_until < bindparam("now")))
# with a hold (see OutboxRelay): a lease that ran out after ``held_after`` is not free yet
_NOT_HELD = outbox.c.claimed_until.is_(None) | (outbox.c.claimed_until <= bindparam("held_after"))
# a lease held by a relay that is gone (db/presence.py): claimable before it runs out
_DEAD_CLAIMER = outbox.c.parked_at.is_(None) & outbox.c.claimed_by.in_(
    bindparam("dead", expanding=True))
_CLAIMS: dict[tuple[int, bool, bool], Any] = {}


def _claim_statement(limit: int, hold: bool = False, takeover: bool = False) -> Any:
    """Lease the ``limit`` oldest free messages in one statement (SQLite ≥ 3.35,
    PostgreSQL); built once per limit:

        WITH picked AS MATERIALIZED (SELECT id … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED)
        UPDATE outbox SET … FROM picked WHERE outbox.id = picked.id RETURNING …

    On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED`` in id order: a relay
    never waits for rows another relay is claiming (or deleting) at the same moment, it
    takes the next free ones, so concurrent relays share the outbox instead of locking
    the same rows in different orders (DeadlockDetected). The pick is a materialized CTE,
    run once: as an ``IN (subquery)`` the planner may rescan it for each row, and each
    rescan skips the rows the update itself has just locked, so more than ``limit`` rows
    were claimed. SQLite has one writer at a time and no row locks; FOR UPDATE is left
    out there.

    ``takeover``: the leases of the claimers in ``dead`` are free too (db/presence.py);
    a hold applies to them as well.

    ``sent_since`` keeps the first claim's time until a relay records the message's fate
    (sent: deleted; not acknowledged: ``outbox_retry_later``); a claim that finds it set
    already is not the first, and its relay looks on the bus before sending."""
    statement = _CLAIMS.get((limit, hold, takeover))
    if statement is None:
        free = (_FREE | _DEAD_CLAIMER) if takeover else _FREE
        free = (free & _NOT_HELD) if hold else free
        picked = (select(outbox.c.id).where(free).order_by(outbox.c.id).limit(limit)
                  .with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED"))
        statement = _CLAIMS[(limit, hold, takeover)] = (
            update(outbox)
            .where(outbox.c.id == picked.c.id)
            .values(claimed_by=bindparam("me"), claimed_until=bindparam("until"),
                    sent_since=func.coalesce(outbox.c.sent_since,
                                            bindparam("claimed_at", type_=DateTime(timezone=True))))
            .returning(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value,
                       outbox.c.request_id, outbox.c.on_sent_status, outbox.c.attempts,
                       outbox.c.sent_since)
        )
    return statement


def _earlier(sent_since: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The claim's ``sent_since`` when an earlier claim set it, None when this one did."""
    if sent_since is None:
        return None
    sent_since = as_utc(sent_since)
    return sent_since if sent_since < now else None


@dataclass(frozen=True)
class OutboxItem:
    """A message to publish once the transaction that records it commits. When the relay
    has delivered it, ``on_sent_status`` (if any) is recorded for ``request_id``."""

    topic: str
    key: str | None
    value: dict[str, Any]
    request_id: str | None = None
    on_sent_status: str | None = None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: str | None
    value: bytes
    request_id: str | None
    on_sent_status: str | None
    attempts: int
    # set when an earlier claim (since then) may have sent it without recording so: the
    # relay looks on the bus from then before sending it again (core/relay.py)
    sent_since: dt.datetime | None = None


class OutboxQueries:
    """The outbox half of ``db.Database`` (a mixin: it uses the database's write
    transactions, and records the statuses that delivered messages stand for)."""

    engine: Engine

    def _begin(self, replayable: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _advance_many(self, conn: Connection, request_ids: Sequence[str], status: str) -> None:
        raise NotImplementedError

    def record_messages(self, messages: Sequence[OutboxItem]) -> None:
        """Record messages in the outbox in a transaction of their own (the watcher's
        early ``sdc_asset_transfer_file_created``)."""
        with self._begin() as conn:
            self._enqueue(conn, messages)

    def claim_outbox(self, limit: int, lease_seconds: float = 30.0) -> list[OutboxRow]:
        """Lease up to ``limit`` unsent messages, oldest first, to this caller. A lease that
        runs out (the relay died) makes them claimable again: at least once."""
        with self._begin() as conn:
            return self._claim(conn, limit, lease_seconds)

    def _claim(self, conn: Connection, limit: int, lease_seconds: float,
               held_after: dt.datetime | None = None,
               presence: Presence | None = None) -> list[OutboxRow]:
        now = utcnow()
        me = presence.claimer() if presence is not None else uuid.uuid4().hex
        params: dict[str, Any] = {"now": now, "claimed_at": now, "me": me,
                                  "until": now + dt.timedelta(seconds=lease_seconds)}
        if held_after is not None:
            params["held_after"] = held_after
        dead = presence.dead(conn, now) if presence is not None else []
        if dead:
            params["dead"] = dead
        rows = conn.execute(_claim_statement(limit, held_after is not None, bool(dead)),
                            params).all()
        rows = sorted(rows)  # RETURNING gives no order; the id is first
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _earlier(r[7], now))
                for r in rows]

    def outbox_sent(self, sent: Sequence[OutboxRow]) -> None:
        """Delete delivered messages and record the statuses they stand for."""
        if not sent:
            return
        with self._begin() as conn:
            self._sent(conn, sent)

    def outbox_sent_and_claim(self, sent: Sequence[OutboxRow], limit: int,
                              lease_seconds: float = 30.0,
                              held_after: dt.datetime | None = None,
                              presence: Presence | None = None) -> list[OutboxRow]:
        """``outbox_sent(sent)`` then ``claim_outbox(limit)`` in one transaction: the
        relay's pass commits once instead of twice (the status messages that ``sent``
        records are claimable at once). Replayable (see ``_begin``). ``held_after``: a
        lease that ran out after that moment is not claimed (core/relay.py's hold).
        ``presence``: the claims carry the relay's id, and the unexpired leases of relays
        found dead are claimed too (db/presence.py)."""
        with self._begin(replayable=True) as conn:
            self._sent(conn, sent)
            return self._claim(conn, limit, lease_seconds, held_after, presence)

    def relay_presence(self) -> Presence | None:
        """A relay's presence (db/presence.py), not yet started: an advisory lock on
        PostgreSQL, a locked file beside an SQLite database file; ``None`` in memory."""
        if self.engine.dialect.name == "postgresql":
            return RelayPresence(self.engine)
        path = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and path and path != ":memory:":
            return FileRelayPresence(Path(f"{path}.relays"))
        return None

    def _sent(self, conn: Connection, sent: Sequence[OutboxRow]) -> None:
        if not sent:
            return
        by_status: dict[str, list[str]] = {}
        for row in sent:
            if row.request_id and row.on_sent_status:
                by_status.setdefault(row.on_sent_status, []).append(row.request_id)
        conn.execute(_DELETE_OUTBOX, {"ids": [r.id for r in sent]})
        for status, request_ids in by_status.items():
            self._advance_many(conn, request_ids, status)

    def outbox_retry_later(self, rows: Sequence[OutboxRow], delay: float, error: str,
                           looked: bool = True) -> None:
        """Claimable again after ``delay`` seconds. ``looked``: the relay sent them and
        the bus did not acknowledge them (their ``sent_since`` is cleared: the bus's
        own retries aside, see bus/kafka.py, they are not on it); False: it could not look
        on the bus for them, and the next claimer still has to."""
        if not rows:
            return
        values: dict[str, Any] = {"attempts": outbox.c.attempts + 1,
                                  "claimed_until": utcnow() + dt.timedelta(seconds=delay),
                                  "last_error": error[:2000]}
        if looked:
            values["sent_since"] = None
        with self._begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                         .values(**values))

    def enqueue(self, conn: Connection, items: Sequence[OutboxItem]) -> None:
        """Record ``items`` in the outbox as part of the caller's transaction ``conn``
        (for other packages' tables: their facts and messages commit together)."""
        self._enqueue(conn, items)

    def outbox_park(self, rows: Sequence[OutboxRow], reasons: Sequence[str]) -> None:
        """Set messages aside for good: the bus refused them (``reasons``). They stay in
        the outbox with ``parked_at`` and ``last_error`` for an operator, and are never
        claimed again (clear ``parked_at`` to send one again)."""
        if not rows:
            return
        now = utcnow()
        with self._begin() as conn:
            for row, reason in zip(rows, reasons):
                conn.execute(update(outbox).where(outbox.c.id == row.id).values(
                    parked_at=now, claimed_until=None, last_error=reason[:2000]))

    def outbox_depth(self) -> int:
        """Messages waiting for delivery (parked ones are not)."""
        query = select(func.count()).select_from(outbox).where(outbox.c.parked_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def outbox_parked(self) -> list[dict[str, Any]]:
        """The parked messages (id, topic, key, request_id, size, reason), oldest first."""
        query = (select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.request_id,
                        func.length(outbox.c.value).label("size"),
                        outbox.c.last_error.label("reason"), outbox.c.parked_at)
                 .where(outbox.c.parked_at.is_not(None)).order_by(outbox.c.id))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def _enqueue(self, conn: Connection, items: Sequence[OutboxItem]) -> None:
        now = utcnow()
        conn.execute(
            _INSERT_OUTBOX,
            [
                {
                    "topic": item.topic,
                    "key": item.key,
                    "value": json.dumps(item.value, separators=(",", ":")).encode(),
                    "request_id": item.request_id,
                    "on_sent_status": item.on_sent_status,
                    "created_at": now,
                    "attempts": 0,
                }
                for item in items
            ],
        )
