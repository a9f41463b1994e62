"""Which outbox relays are alive (PostgreSQL): a dead relay's claims are taken at once,
not after their lease (issue 12: a gateway SIGKILLed during a relay pass held its batch
for the whole 30 s lease, and ``platform.upload.available`` paused that long).

Each relay picks a random id and holds the session-level advisory lock
``(RELAY_LOCK_NAMESPACE, id)`` on a connection of its own for its whole life; its claims
carry ``claimed_by = 'relay:<id>'``. A process that dies loses that connection, and
PostgreSQL releases the lock as soon as it sees the socket closed (at once on loopback).
Another relay reads the live ids from ``pg_locks`` and claims the unexpired leases of an
id it has found absent for ``GRACE`` seconds.

Why the grace: a relay that is alive can lose its lock connection too (a database
restart, a network cut, a terminated backend) while it holds the broker's
acknowledgements of a batch it has yet to record; taking that batch would send it again.
Its keeper (``keep``, every ``KEEP_INTERVAL``) re-takes the lock with the same id as soon
as the database answers, well within ``GRACE``, and another relay's absence clock only
runs while the database answers it. A longer outage also falls under the relay's hold
(core/relay.py): leases that ran out, or whose holder looked dead, after the outage began
are left alone until the hold ends. A claim made without the lock (it was lost at that
moment) carries a random ``claimed_by`` and waits for its lease, as before. Whoever takes a
batch, dead claimer's or live one's, looks on the bus first and sends only what is not
there (``outbox.sent_since``, core/relay.py): what the grace and the hold still guard
against is a live relay sending after that look.

On SQLite (one machine; one or more gateway processes on one database file) a relay's proof
of life is an exclusive ``flock`` on a file of its own, ``<database>.relays/<id>``, held
for its whole life (``FileRelayPresence``, bus/liveness.py); its claims carry
``claimed_by = 'relayf:<id>'``. The kernel releases the lock when the process dies, and
only then: a live process cannot lose it, so a claimer whose file is missing or can be
locked is dead at once, no grace.
(Before it, SQLite had leases only: a gateway SIGKILLed during a relay pass held its batch
for the whole 30 s lease.)"""
from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Engine

from bus.liveness import LockFile, gone

logger = logging.getLogger(__name__)

RELAY_LOCK_NAMESPACE = 0x72656C79  # "rely": the first key of the two-int advisory lock
GRACE = 3.0
KEEP_INTERVAL = 0.5
PROBE_INTERVAL = 0.5
PREFIX = "relay:"

# the claimers of unexpired leases (not this relay's) whose advisory lock nobody holds
_ABSENT_CLAIMERS = text(
    "SELECT DISTINCT claimed_by FROM outbox "
    "WHERE parked_at IS NULL AND claimed_until >= :now AND claimed_by LIKE 'relay:%' "
    "AND claimed_by <> :me AND claimed_by NOT IN ("
    " SELECT 'relay:' || objid::text FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid = :ns AND objsubid = 2"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))")


class Presence(Protocol):
    """What the relay (core/relay.py) and its claims (db/outbox.py) use of a presence."""

    def start(self) -> None: ...

    def close(self) -> None: ...

    def claimer(self) -> str: ...

    def dead(self, conn: Any, now: Any) -> list[str]: ...

    def forget(self) -> None: ...


class RelayPresence:
    """One relay's advisory lock (its proof of life) and its view of the others'."""

    def __init__(self, engine: Engine, grace: float = GRACE) -> None:
        self.engine = engine
        self.grace = grace
        self.id = secrets.randbelow(2 ** 31 - 1) + 1
        self._conn: Any = None  # the DB-API connection that holds the lock
        self._held = False
        self._lock = threading.Lock()
        self._absent: dict[str, float] = {}  # claimer -> time.monotonic() first seen absent
        self._probed_at = 0.0
        self._reported: set[str] = set()  # the dead claimers logged
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # this relay's lock ---------------------------------------------------------------------

    def start(self) -> None:
        """Take the lock (if the database answers) and keep it from a thread of its own."""
        self.keep()
        self._thread = threading.Thread(target=self._run, name="relay-presence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(KEEP_INTERVAL):
            self.keep()

    def keep(self) -> bool:
        """Check the lock connection; reconnect and re-take the lock (the same id while
        nobody else holds it) when it was lost. Returns whether the lock is held."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return self._held
                except Exception:  # noqa: BLE001 - the connection is gone; make another
                    self._drop()
                    logger.warning("relay %d lost its presence lock; re-taking it", self.id)
            try:
                cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
                cparams.setdefault("connect_timeout", 5)  # close() waits for a hung connect
                conn = self.engine.dialect.connect(*cargs, **cparams)
                conn.autocommit = True
                for _ in range(3):
                    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                       (RELAY_LOCK_NAMESPACE, self.id)).fetchone()
                    if row[0]:
                        break
                    # another live relay has this id (one chance in 2**31): take another
                    self.id = secrets.randbelow(2 ** 31 - 1) + 1
                else:
                    conn.close()
                    return False
            except Exception:  # noqa: BLE001 - the database is down: try on the next tick
                return False
            self._conn, self._held = conn, True
            return True

    def claimer(self) -> str:
        """What this relay's claims carry: its id while it holds its lock, else a random
        name (such a claim waits for its lease)."""
        if self._held:
            return f"{PREFIX}{self.id}"
        return uuid.uuid4().hex

    def _drop(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def close(self) -> None:
        """Release the lock (closing its connection)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            self._drop()

    # the others ----------------------------------------------------------------------------

    def dead(self, conn: Any, now: Any) -> list[str]:
        """The claimers found absent for at least the grace, probed on ``conn`` (the
        claim's transaction) at most every ``PROBE_INTERVAL``."""
        moment = time.monotonic()
        if moment - self._probed_at >= PROBE_INTERVAL:
            self._probed_at = moment
            absent = {r[0] for r in conn.execute(
                _ABSENT_CLAIMERS, {"now": now, "me": f"{PREFIX}{self.id}",
                                   "ns": RELAY_LOCK_NAMESPACE})}
            self._absent = {c: self._absent.get(c, moment) for c in absent}
        dead = sorted(c for c, since in self._absent.items() if moment - since >= self.grace)
        for claimer in set(dead) - self._reported:
            logger.info("outbox relay %s gone for %.1fs: its unexpired claims are free",
                        claimer, moment - self._absent[claimer])
        self._reported = set(dead)
        return dead

    def forget(self) -> None:
        """Start the absence clocks again (the database was unreachable meanwhile: what
        was seen before says nothing about who is alive now)."""
        self._absent = {}
        self._probed_at = 0.0


FILE_PREFIX = "relayf:"
# the claimers of unexpired leases (not this relay's) that carry a file presence's id
_FILE_CLAIMERS = text(
    "SELECT DISTINCT claimed_by FROM outbox "
    "WHERE parked_at IS NULL AND claimed_until >= :now AND claimed_by LIKE 'relayf:%' "
    "AND claimed_by <> :me")


class FileRelayPresence:
    """One relay's locked file in ``directory`` (its proof of life on SQLite,
    bus/liveness.py) and its view of the others' (see the module)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file = LockFile(directory)
        self.id = self._file.id
        self._dead: list[str] = []
        self._probed_at = 0.0
        self._reported: set[str] = set()

    def start(self) -> None:
        """Take the file. Without it (a read-only directory, say) the claims carry random
        names and wait for their leases, as before."""
        if not self._file.hold():
            logger.warning("outbox relay %s has no presence file: if it dies, its claims "
                           "wait for their lease", self.id)

    def claimer(self) -> str:
        """``relayf:<id>`` while this relay holds its file, else a random name."""
        if self._file.held:
            return f"{FILE_PREFIX}{self.id}"
        return uuid.uuid4().hex

    def dead(self, conn: Any, now: Any) -> list[str]:
        """The claimers of unexpired leases whose relay is gone, probed on ``conn`` (the
        claim's transaction) at most every ``PROBE_INTERVAL``."""
        moment = time.monotonic()
        if moment - self._probed_at >= PROBE_INTERVAL:
            self._probed_at = moment
            claimers = [r[0] for r in conn.execute(
                _FILE_CLAIMERS, {"now": now, "me": f"{FILE_PREFIX}{self.id}"})]
            self._dead = sorted(c for c in claimers
                                if gone(self.directory, c[len(FILE_PREFIX):]))
        for claimer in set(self._dead) - self._reported:
            logger.info("outbox relay %s is gone (its lock file is free): its unexpired "
                        "claims are free", claimer)
        self._reported = set(self._dead)
        return self._dead

    def forget(self) -> None:
        """Nothing to forget: a lock file does not depend on the database."""
        self._probed_at = 0.0

    def close(self) -> None:
        """Remove the file and release its lock."""
        self._file.release()
