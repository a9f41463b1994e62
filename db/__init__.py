"""The gateway's database: uploads, their status timeline, and the outbox (its queries
in ``db.outbox``, the engine in ``db.engine``).

SQLAlchemy Core over SQLite (default, a file under ``WORKDIR``, WAL with synchronous=FULL so
that a commit survives a crash) or PostgreSQL (``DATABASE_URL=postgresql://…``; the
psycopg 3 driver is used). Alembic migrations in ``db/migrations`` run at start-up.

Statuses move forward only. Each status is recorded once in the timeline with its UTC time;
``uploads.status`` holds the furthest one. ``validated``/``rejected`` are decided once, by
the first verdict; a verdict after that is a duplicate.

Every method is blocking and thread-safe (one pooled connection per call).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from alembic import command
from alembic.config import Config
from alembic.util import CommandError as AlembicError
from sqlalchemy import BindParameter, Connection, bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bus.topics import PAYLOAD_STATUS
from db.engine import as_utc, make_engine, utcnow
from db.fence import CleanupFence, RecordTooLate
from db.outbox import OutboxItem, OutboxQueries, OutboxRow
from db.schema import upload_events, uploads
from db.turn import TurnTimeout, write_turn
from db.tus import TusQueries, tus_uploads

__all__ = ["OPEN_FOR_VERDICT", "RANK", "VERDICT_STATUS", "Database", "MigrationError",
           "OutboxItem", "OutboxRow", "RecordTooLate", "Verdict", "as_utc", "make_engine",
           "utcnow"]

logger = logging.getLogger(__name__)

RANK = {
    "created": -2,  # a resumable (tus) upload, before and while its bytes arrive
    "receiving": -1,
    "received": 0,
    "stored": 1,
    "announced": 2,
    "handed_off": 3,
    "validated": 4,
    "rejected": 4,
    "available": 5,
    "terminated": 4,  # a resumable upload its client ended, or that expired unfinished
    "expired": 4,
}
VERDICT_STATUS = {"success": "validated", "failure": "rejected", "handoff": "handed_off"}
OPEN_FOR_VERDICT = ("stored", "announced", "handed_off")
# pg_advisory_xact_lock key that serializes schema upgrades (any fixed 64-bit number)
MIGRATION_LOCK = 0x75706C6F6164  # "upload"
# SQLite: how long a writer waits for the write turn (db/turn.py), as long as the busy
# timeout (db/engine.py) it would otherwise wait for the write lock
TURN_TIMEOUT = 30.0


class MigrationError(RuntimeError):
    """The schema could not be brought up to date (database unreachable, unknown
    revision, a failing migration): the process cannot start."""


# Hot-path statements are built once: a statement object memoizes its cache key, while a
# fresh select()/update() with literal values costs its cache-key generation and bind
# construction on every call (most of the relay's and the verdict loop's CPU in
# bench/profile_gateway.py). Values travel as bind parameters.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_GET_UPLOAD = select(uploads).where(uploads.c.request_id == bindparam("rid"))
_UPLOAD_EXISTS = select(uploads.c.request_id).where(uploads.c.request_id == bindparam("rid"))
_UPLOADS_BY_IDS = select(uploads).where(uploads.c.request_id.in_(_IDS))
_INSERT_UPLOADS = insert(uploads)
# a timeline event, not a status: a verdict came in and waits for the storage
WAITING = "waiting"
_INSERT_EVENTS = insert(upload_events)
_EVENT_EXISTS = (
    select(upload_events.c.id)
    .where(upload_events.c.request_id == bindparam("rid"))
    .where(upload_events.c.status == bindparam("st"))
)
_EVENTS_DONE = (
    select(upload_events.c.request_id)
    .where(upload_events.c.request_id.in_(_IDS))
    .where(upload_events.c.status == bindparam("st"))
)


def _advance_statement(status: str, many: bool) -> Any:
    """Move uploads to ``status`` from any lower one (RETURNING the rows it moved)."""
    lower = [name for name, rank in RANK.items() if rank < RANK[status]]
    which = uploads.c.request_id.in_(_IDS) if many else uploads.c.request_id == bindparam("rid")
    return (
        update(uploads).where(which).where(uploads.c.status.in_(lower))
        .values(status=status, updated_at=bindparam("now")).returning(*uploads.c)
    )


_ADVANCE = {status: _advance_statement(status, False) for status in RANK}
_ADVANCE_MANY = {status: _advance_statement(status, True) for status in RANK}
_APPLY_VERDICT = {
    status: update(uploads)
    .where(uploads.c.request_id == bindparam("rid"))
    .where(uploads.c.status.in_(OPEN_FOR_VERDICT))
    .where(uploads.c.status != status)
    .values(status=status, reason=bindparam("new_reason"), verdict=bindparam("new_verdict"),
            bucket={"validated": "perm", "rejected": "reject"}.get(status, "quarantine"),
            updated_at=bindparam("now"))
    .returning(*uploads.c)
    for status in set(VERDICT_STATUS.values())
}
# (request_id, verdict, reason, details, messages): the arguments of ``apply_verdict``
Verdict = tuple[str, str, "str | None", dict[str, Any], Sequence[OutboxItem]]


class Database(OutboxQueries, TusQueries, CleanupFence):
    def __init__(self, url: str, status_topic: str = PAYLOAD_STATUS) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._turn = (write_turn(self.engine.url.database)
                      if self.engine.dialect.name == "sqlite" else None)
        self.status_topic = status_topic

    def migrate(self) -> None:
        """Upgrade the schema to every head, once, however many processes start at the
        same moment: on PostgreSQL under a transaction-level advisory lock (DDL is
        transactional there, so whoever waited finds the schema current and does
        nothing); on SQLite, whose DDL commits on its own, under an exclusive lock on a
        file beside the database. ``MigrationError`` says what went wrong."""
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self._migration_lock(), self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": MIGRATION_LOCK})
                config.attributes["connection"] = conn
                # "heads": packages add migrations on branches of their own off 0001
                command.upgrade(config, "heads")
        except (SQLAlchemyError, AlembicError) as exc:
            raise MigrationError(f"database schema upgrade failed: {exc}") from exc

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        if not path or path == ":memory:":
            yield
            return
        with open(f"{path}.migrate-lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self, replayable: bool = False) -> Iterator[Connection]:
        """A write transaction. On SQLite, writers take turns first (``db.turn``: the
        threads of this process on a lock, the processes on a ``flock`` beside the file):
        SQLite has one writer at a time, and its busy handler waits by sleeping (1, 2, 5
        ... 100 ms), which made the p99 of small uploads seconds long in one process
        and, with ``--workers 2``, between the processes (issue 14, bench/README.md).

        ``replayable``: losing this transaction to a power cut only repeats work (the
        relay's pass: what it recorded as sent is sent again, at least once), so on
        SQLite it commits with ``synchronous=NORMAL``: no fsync of its own while every
        other writer waits (the next FULL commit syncs it with the rest of the WAL). It
        also lets this process's other writers (the uploads' group commit before their
        202s, verdicts) go first when they wait (``WriteTurn``, ``deferring``)."""
        if self._turn is None:
            with self.engine.begin() as conn:
                yield conn
            return
        if not replayable:
            with self._turn_within(), self.engine.begin() as conn:
                yield conn
            return
        with self._turn_within(deferring=True), self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                try:
                    raw.execute("PRAGMA synchronous=FULL")
                except BaseException:
                    conn.invalidate()  # never hand a relaxed connection to another writer
                    raise

    @contextmanager
    def _turn_within(self, deferring: bool = False) -> Iterator[None]:
        """The write turn, waited for as long as SQLite's busy timeout; past it, what
        SQLite itself raises for a write lock held too long ("database is locked")."""
        assert self._turn is not None
        try:
            with self._turn(deferring, TURN_TIMEOUT):
                yield
        except TurnTimeout as exc:
            raise OperationalError("-- waiting for the write turn", None,
                                   sqlite3.OperationalError(f"database is locked: {exc}")) from exc

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # uploads -----------------------------------------------------------------------------

    def record_upload(
        self,
        row: dict[str, Any],
        received_at: dt.datetime,
        messages: Sequence[OutboxItem],
        deadline: float | None = None,
    ) -> None:
        """Insert a stored upload, its received/stored timeline and its outbox messages
        in one transaction: once this returns, the announcement cannot be lost. A
        ``note`` in ``row`` (where the payload came from) is the received entry's message.
        ``deadline`` (``time.monotonic``): ``RecordTooLate`` rather than commit after it
        (``db.fence``)."""
        with self._begin() as conn:
            self._record(conn, [(row, received_at, messages)], [deadline])

    def record_uploads(
        self, entries: Sequence[tuple[dict[str, Any], dt.datetime, Sequence[OutboxItem]]],
        deadlines: Sequence[float | None] | None = None,
    ) -> list[Exception | None]:
        """Group commit: ``record_upload`` for several uploads in one transaction (one
        fsync). Returns per entry ``None`` (recorded) or the ``IntegrityError`` or
        ``RecordTooLate`` that refused it: when the batch hits one, each entry is retried
        on its own, so that a duplicate request id or a late upload fails only itself.
        Other errors raise for all."""
        if not entries:
            return []
        deadlines = list(deadlines or [None] * len(entries))
        try:
            with self._begin() as conn:
                self._record(conn, entries, deadlines)
            return [None] * len(entries)
        except (IntegrityError, RecordTooLate):
            if len(entries) == 1:
                raise
        results: list[Exception | None] = []
        for entry, deadline in zip(entries, deadlines):
            try:
                self.record_upload(*entry, deadline=deadline)
                results.append(None)
            except (IntegrityError, RecordTooLate) as exc:
                results.append(exc)
        return results

    def record_bundle(self, conn: Connection, row: dict[str, Any], started_at: dt.datetime,
                      messages: Sequence[OutboxItem]) -> None:
        """Record an object the system built itself from validated uploads (a treatment
        plan's bundle, in perm) as an upload, in the caller's transaction ``conn``: its
        request id has a status and a timeline like any announced payload (received when
        its building started, stored, validated, then available once ``messages``' item
        with ``on_sent_status="available"`` is delivered)."""
        now = utcnow()
        values = {k: v for k, v in row.items() if k != "note"}
        conn.execute(_INSERT_UPLOADS, [{**values, "status": "validated",
                                        "created_at": started_at, "updated_at": now}])
        conn.execute(_INSERT_EVENTS, [
            {"request_id": row["request_id"], "status": "received", "at": started_at,
             "message": row.get("note")},
            {"request_id": row["request_id"], "status": "stored", "at": now,
             "message": f"stored in {row['bucket']}"},
            {"request_id": row["request_id"], "status": "validated", "at": now,
             "message": "built from validated uploads"},
        ])
        self._enqueue(conn, [*messages, self._status_item(row, "validated",
                                                          "built from validated uploads")])

    def _record(
        self,
        conn: Connection,
        entries: Sequence[tuple[dict[str, Any], dt.datetime, Sequence[OutboxItem]]],
        deadlines: Sequence[float | None],
    ) -> None:
        self._fence_shared(conn)
        self._insert_uploads(conn, entries)
        self._check_deadlines(deadlines)  # last: any wait above counts

    def _insert_uploads(
        self,
        conn: Connection,
        entries: Sequence[tuple[dict[str, Any], dt.datetime, Sequence[OutboxItem]]],
    ) -> None:
        now = utcnow()
        conn.execute(_INSERT_UPLOADS, [
            {**{k: v for k, v in row.items() if k != "note"}, "status": "stored",
             "created_at": received_at, "updated_at": now}
            for row, received_at, _ in entries
        ])
        conn.execute(_INSERT_EVENTS, [
            event
            for row, received_at, _ in entries
            for event in (
                {"request_id": row["request_id"], "status": "received",
                 "message": row.get("note"), "at": received_at},
                {"request_id": row["request_id"], "status": "stored", "message": None,
                 "at": now},
            )
        ])
        self._enqueue(conn, [
            item
            for row, _, messages in entries
            for item in (*messages, self._status_item(row, "stored", "stored in quarantine"))
        ])

    def get_upload(self, request_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            record = conn.execute(_GET_UPLOAD, {"rid": request_id}).mappings().first()
        return dict(record) if record else None

    def get_uploads(self, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The recorded uploads among ``request_ids``, by request id."""
        if not request_ids:
            return {}
        with self.engine.connect() as conn:
            found = conn.execute(_UPLOADS_BY_IDS, {"ids": list(dict.fromkeys(request_ids))})
            return {r["request_id"]: dict(r) for r in found.mappings()}

    def timeline(self, request_id: str) -> list[dict[str, Any]]:
        query = (
            select(upload_events.c.status, upload_events.c.message, upload_events.c.at)
            .where(upload_events.c.request_id == request_id)
            .order_by(upload_events.c.at, upload_events.c.id)
        )
        with self.engine.connect() as conn:
            return [
                {"status": r.status, "message": r.message, "at": as_utc(r.at)}
                for r in conn.execute(query)
            ]

    def known_object_keys(self, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` that belong to a recorded upload (or to a resumable
        upload's object that is not one yet: a completed tus partial)."""
        ids = list(keys)
        known: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                query = select(uploads.c.object_key).where(uploads.c.object_key.in_(chunk))
                known.update(conn.execute(query).scalars())
                query = select(tus_uploads.c.object_key).where(
                    tus_uploads.c.object_key.in_(chunk))
                known.update(conn.execute(query).scalars())
        return known

    def upload_by_object_key(self, key: str) -> dict[str, Any] | None:
        """The upload whose object is stored under ``key`` (in any bucket)."""
        with self.engine.connect() as conn:
            found = conn.execute(select(uploads).where(uploads.c.object_key == key))
            record = found.mappings().first()
        return dict(record) if record else None

    def overdue(self, older_than: dt.datetime, limit: int = 500) -> list[str]:
        """Request ids still waiting for a first verdict since before ``older_than`` (not
        those whose verdict came and waits to be applied: ``record_waiting``)."""
        query = (
            select(uploads.c.request_id)
            .where(uploads.c.status.in_(("stored", "announced")))
            .where(uploads.c.created_at < older_than)
            .where(~select(upload_events.c.request_id)
                   .where(upload_events.c.request_id == uploads.c.request_id)
                   .where(upload_events.c.status == WAITING).exists())
            .order_by(uploads.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def record_status(self, request_id: str, status: str, message: str | None = None) -> bool:
        """Record a non-verdict status (announced, available). False if already recorded."""
        with self._begin() as conn:
            return self._advance(conn, request_id, status, message)

    def record_waiting(self, request_ids: Sequence[str], message: str) -> None:
        """Add a ``waiting`` event (once) to the timelines of uploads whose verdict came
        in and cannot be applied yet (the storage is unavailable); their status stays as
        it is, and the timeout sweeper leaves them to the verdict (``overdue``)."""
        with self._begin() as conn:
            self._events(conn, {(request_id, WAITING): (message, utcnow())
                                for request_id in request_ids})

    def apply_verdict(
        self,
        request_id: str,
        verdict: str,
        reason: str | None,
        details: dict[str, Any],
        messages: Sequence[OutboxItem] = (),
    ) -> str:
        """Record a validator's verdict. Returns ``applied``, ``duplicate`` (the upload is
        already decided: a redelivery) or ``unknown`` (no such upload)."""
        return self.apply_verdicts([(request_id, verdict, reason, details, messages)])[0]

    def apply_verdicts(self, verdicts: Sequence[Verdict]) -> list[str]:
        """``apply_verdict`` for each of ``verdicts``, in order, in one transaction: an
        UPDATE per verdict, then the timeline events and the outbox messages of the whole
        batch in a few statements (it was four statements per verdict, each a round trip:
        a third of a verdict batch's time on PostgreSQL)."""
        results: list[str] = []
        events: dict[tuple[str, str], tuple[str | None, dt.datetime]] = {}
        items: list[OutboxItem] = []
        with self._begin() as conn:
            for request_id, verdict, reason, details, messages in verdicts:
                status = VERDICT_STATUS[verdict]
                changed = conn.execute(_APPLY_VERDICT[status], {
                    "rid": request_id, "new_reason": reason, "new_verdict": json.dumps(details),
                    "now": utcnow()}).mappings().first()
                if changed is None:
                    exists = conn.execute(_UPLOAD_EXISTS, {"rid": request_id}).first()
                    results.append("duplicate" if exists else "unknown")
                    continue
                events.setdefault((request_id, status), (reason, utcnow()))
                items += [*messages, self._status_item(dict(changed), status, reason or verdict)]
                results.append("applied")
            self._events(conn, events)
            if items:
                self._enqueue(conn, items)
        return results

    def _events(self, conn: Connection,
                events: dict[tuple[str, str], tuple[str | None, dt.datetime]]) -> None:
        """Add the timeline events ((request_id, status) → (message, at)) that are not
        there yet, in their order."""
        done: set[tuple[str, str]] = set()
        for status in dict.fromkeys(status for _, status in events):
            ids = [request_id for request_id, st in events if st == status]
            done.update((request_id, status) for request_id in
                        conn.execute(_EVENTS_DONE, {"ids": ids, "st": status}).scalars())
        new = [{"request_id": request_id, "status": status, "message": message, "at": at}
               for (request_id, status), (message, at) in events.items()
               if (request_id, status) not in done]
        if new:
            conn.execute(_INSERT_EVENTS, new)

    # internals ---------------------------------------------------------------------------

    def _event(self, conn: Connection, request_id: str, status: str, message: str | None) -> bool:
        if conn.execute(_EVENT_EXISTS, {"rid": request_id, "st": status}).first():
            return False
        conn.execute(_INSERT_EVENTS, [
            {"request_id": request_id, "status": status, "message": message, "at": utcnow()}])
        return True

    def _advance(self, conn: Connection, request_id: str, status: str, message: str | None) -> bool:
        if not self._event(conn, request_id, status, message):
            return False
        record = conn.execute(_ADVANCE[status], {"rid": request_id, "now": utcnow()}
                              ).mappings().first()
        if record is None:  # already further on (or unknown): the status is still told
            record = conn.execute(_GET_UPLOAD, {"rid": request_id}).mappings().first()
        if record:
            self._enqueue(conn, [self._status_item(dict(record), status, message or status)])
        return True

    def _advance_many(self, conn: Connection, request_ids: Sequence[str], status: str) -> None:
        """``_advance`` for a batch (the relay's delivered messages): a few statements in
        all instead of five per upload."""
        ids = list(dict.fromkeys(request_ids))
        done = set(conn.execute(_EVENTS_DONE, {"ids": ids, "st": status}).scalars())
        new = [request_id for request_id in ids if request_id not in done]
        if not new:
            return
        now = utcnow()
        conn.execute(_INSERT_EVENTS, [
            {"request_id": request_id, "status": status, "message": None, "at": now}
            for request_id in new
        ])
        records = {r["request_id"]: dict(r) for r in conn.execute(
            _ADVANCE_MANY[status], {"ids": new, "now": now}).mappings()}
        rest = [request_id for request_id in new if request_id not in records]
        if rest:  # already further on (or unknown): their status is still told
            records.update((r["request_id"], dict(r)) for r in conn.execute(
                _UPLOADS_BY_IDS, {"ids": rest}).mappings())
        items = [self._status_item(records[i], status, status) for i in new if i in records]
        if items:
            self._enqueue(conn, items)

    def _status_item(self, row: dict[str, Any], status: str, message: str) -> OutboxItem:
        return OutboxItem(
            topic=self.status_topic,
            key=row["request_id"],
            value={
                "service": row["service"],
                "request_id": row["request_id"],
                "status": status,
                "status_msg": message,
                "account": row.get("account"),
                "org_id": row.get("org_id"),
                "date": utcnow().isoformat(),
            },
        )
