"""The clean-up fence: clean-up reads which stored objects no upload references while no
upload can be recorded, so that it never races an upload between its storage commit and
its database commit (see ``core.cleanup``).

Every transaction that records uploads (``Database._record``) holds the fence's shared
side until it commits, and fails with ``RecordTooLate`` when it would commit past its
deadline. ``unreferenced_keys`` takes the exclusive side: it waits until the record
transactions under way have committed or rolled back, and no new one starts until it has
read. On PostgreSQL the fence is a transaction-level advisory lock, taken by clean-up with
a short ``lock_timeout`` and retried, so that waiting for one slow record never stalls the
others for long; on SQLite it is the database's single write lock.
"""
from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Collection

from sqlalchemy import Connection, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from db.schema import uploads

# pg_advisory_xact_lock key of the fence (any fixed 64-bit number)
CLEANUP_LOCK = 0x636C65616E  # "clean"
LOCK_WAIT = "200ms"
ATTEMPTS = 50


class RecordTooLate(TimeoutError):
    """The upload would be recorded after its deadline: clean-up may already count its
    object as abandoned, so it is not recorded (the client gets 503 and may retry)."""


class CleanupFence:
    """The fence half of ``db.Database`` (a mixin)."""

    engine: Engine

    def _begin(self, replayable: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _fence_shared(self, conn: Connection) -> None:
        """Hold the fence's shared side for the rest of ``conn``'s transaction (a record
        transaction; on SQLite its first write takes the lock)."""
        if self.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": CLEANUP_LOCK})

    @staticmethod
    def _check_deadlines(deadlines: Collection[float | None]) -> None:
        """Call last in a record transaction: a deadline (``time.monotonic``) passed."""
        now = time.monotonic()
        late = [d for d in deadlines if d is not None and now > d]
        if late:
            raise RecordTooLate(f"upload not recorded within its deadline "
                                f"({now - min(late):.1f}s late)")

    def unreferenced_keys(self, keys: Collection[str]) -> set[str]:
        """The keys among ``keys`` that no upload references, read behind the fence.
        ``TimeoutError`` when the fence could not be taken (clean-up tries again later)."""
        if not keys:
            return set()
        postgres = self.engine.dialect.name == "postgresql"
        for attempt in range(ATTEMPTS):
            try:
                with self._begin() as conn:  # on SQLite, in its write turn (db.turn)
                    if postgres:
                        conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": CLEANUP_LOCK})
                    else:  # any write takes SQLite's write lock until the transaction ends
                        conn.execute(text("DELETE FROM outbox WHERE 0 = 1"))
                    return set(keys) - _known(conn, keys)
            except OperationalError as exc:
                if not _lock_timeout(exc):
                    raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
        raise TimeoutError("clean-up could not take the fence: uploads kept recording")


def _known(conn: Connection, keys: Collection[str]) -> set[str]:
    ids, known = list(keys), set[str]()
    for start in range(0, len(ids), 500):
        query = select(uploads.c.object_key).where(uploads.c.object_key.in_(ids[start:start + 500]))
        known.update(conn.execute(query).scalars())
    return known


def _lock_timeout(exc: OperationalError) -> bool:
    """PostgreSQL's lock_not_available (55P03), or SQLite's busy database."""
    code = getattr(exc.orig, "sqlstate", None)
    return code == "55P03" or "database is locked" in str(exc.orig)
