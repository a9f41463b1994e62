"""The embedded bus: an append-only log in one SQLite file, ``settings.bus_path``
(``WORKDIR/bus.sqlite``), shared by the processes of one machine.

Durability: WAL journal, ``synchronous=FULL``; ``send`` returns only after its
transaction committed, so an acknowledged message survives a crash. SQLite errors
(disk I/O, database locked longer than the busy timeout) become ``BusUnavailable``.

Layout: ``messages(id, topic, key, value, ts)``: one partition (0) per topic, the offset
is the row id (ids grow across topics, so offsets of one topic have gaps).
``offsets(group, topic, committed_id)``: the last id a group has finished, per topic; a
commit never moves it backwards. ``leases(group, topic, owner, expires)``: see below.
Topics exist implicitly; ``create_topics`` does nothing.

Consumer groups: at most one member of a group reads a topic at a time. A member holds a
lease row per topic, renewed by its ``poll`` and ``commit`` (expiry ``lease_seconds``,
10 s); other members of the group get nothing from that topic until the holder closes
(which releases the lease) or stops polling for longer than the lease. A member whose
lease was taken over drops what it had fetched and resumes from the committed offset when
it gets the lease back. A handler that runs longer than the lease between two polls
may therefore see its message handled again by another member: at least once, and
consumers dedupe. A paused consumer (``pause``) keeps renewing its leases and takes
nothing. Lease expiry uses the wall clock shared by the processes. A member that died
(SIGKILL) does not hold its leases until they expire: each member keeps a locked file,
``<bus>.members/<owner>``, for its life (bus/liveness.py), and a member that finds a lease
held by an owner whose file is free takes it at once (``PROBE_INTERVAL``): the gateway
restarted after a kill read the verdicts again 10 s later before.

Latency: a ``send`` wakes the idle ``poll``s of its topics at once (after its commit): in
its own process directly, in the other processes through their doorbells
(bus/doorbell.py: a Unix datagram per process). Besides, an idle ``poll`` checks the log
every 2 ms, backing off to every 20 ms (the backoff resets when a message arrives), so a
message is seen within about 20 ms of its commit even without a ring. Rows are fetched
100 at a time. One SQLite connection per thread and per object.

Retention: a producer prunes the log at most every ``PRUNE_INTERVAL`` seconds: a message
older than ``BUS_RETENTION_HOURS`` (168) goes once every group that reads its topic has
committed past it (a topic nobody has read is pruned by age alone, as Kafka does). A group
that stops reading therefore holds its topic's log until it is deleted from ``offsets``.
All processes must be on one machine with a local file system (WAL needs shared memory).
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from bus import Bus, BusUnavailable, Consumer, Message, OutMessage, Producer, Refused
from bus.doorbell import Doorbell
from bus.liveness import LockFile, gone
from core.settings import Settings
from db.turn import TurnTimeout, write_turn

logger = logging.getLogger(__name__)
T = TypeVar("T")

BUSY_TIMEOUT = 5.0
LEASE_SECONDS = 10.0
PROBE_INTERVAL = 0.25  # how often a member waiting for a lease looks whether its holder died
FETCH_BATCH = 100
MIN_IDLE_SLEEP = 0.002
MAX_IDLE_SLEEP = 0.020

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT,
    value BLOB NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_topic_id ON messages (topic, id);
CREATE TABLE IF NOT EXISTS offsets (
    "group" TEXT NOT NULL,
    topic TEXT NOT NULL,
    committed_id INTEGER NOT NULL,
    PRIMARY KEY ("group", topic)
);
CREATE TABLE IF NOT EXISTS leases (
    "group" TEXT NOT NULL,
    topic TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY ("group", topic)
);
"""


class _Connections:
    """One connection per thread, all closed by ``close``. Connections are never used
    by two threads; ``check_same_thread`` is off only so that ``close`` may run anywhere."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.turn = write_turn(path)  # the writers of every process take turns (db.turn)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("bus connection used after close")
            conn = _connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.OperationalError as exc:
        raise BusUnavailable(f"cannot open {path}: {exc}") from exc
    return conn


Statement = tuple[str, Sequence[object]]


class _Appends:
    """Counts appends per topic of one log file in this process, so that a consumer's
    idle ``poll`` waits on a condition that ``send`` notifies instead of sleeping out its
    poll interval: three bus hops are on the upload → available path of ``python app.py``."""

    def __init__(self, path: Path) -> None:
        self._changed = threading.Condition()
        self._counts: dict[str, int] = {}
        self.doorbell = Doorbell(path, self.appended)  # the other processes' appends

    def mark(self, topics: Sequence[str]) -> int:
        counts = self._counts
        return sum(counts.get(topic, 0) for topic in topics)

    def appended(self, topics: Sequence[str]) -> None:
        with self._changed:
            for topic in set(topics):
                self._counts[topic] = self._counts.get(topic, 0) + 1
            self._changed.notify_all()

    def wait(self, topics: Sequence[str], mark: int, timeout: float) -> None:
        """Wait until an append to ``topics`` after ``mark``, or ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: self.mark(topics) != mark, timeout)


_APPENDS: dict[str, _Appends] = {}
_APPENDS_LOCK = threading.Lock()


def _appends(path: Path) -> _Appends:
    key = str(path.resolve())
    with _APPENDS_LOCK:
        if key not in _APPENDS:
            _APPENDS[key] = _Appends(Path(key))
        return _APPENDS[key]


def _in_write_transaction(conns: _Connections, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in one write transaction (BEGIN IMMEDIATE: no lock upgrade deadlock),
    in the file's write turn: SQLite's busy handler waits for the write lock by sleeping
    (1, 2, 5 ... 100 ms), which put tens of milliseconds between the relay, the
    validators and the consumers' commits of one process (bench/latency.py), and between
    the processes of ``gateway --workers N`` (issue 14)."""
    conn = conns.get()
    try:
        with conns.turn(timeout=BUSY_TIMEOUT):
            return _write_transaction(conn, work)
    except TurnTimeout as exc:
        raise BusUnavailable(f"local bus: {exc}") from exc


def _write_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        raise BusUnavailable(f"local bus: {exc}") from exc
    return result


def _write(conns: _Connections, statements: Sequence[Statement]) -> list[int]:
    """Run ``statements`` in one write transaction; returns each one's row count."""
    return _in_write_transaction(
        conns, lambda c: [c.execute(sql, params).rowcount for sql, params in statements])


def _read_one(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> tuple[Any, ...] | None:
    try:
        row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
    except sqlite3.OperationalError as exc:
        raise BusUnavailable(f"local bus: {exc}") from exc
    return row


class LocalBus(Bus):
    def __init__(self, settings: Settings, lease_seconds: float = LEASE_SECONDS) -> None:
        self.path = settings.bus_path
        self.lease_seconds = lease_seconds
        self.retention = settings.bus_retention_hours * 3600.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conns = _Connections(self.path)
        conn = self._conns.get()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            raise BusUnavailable(f"cannot prepare {self.path}: {exc}") from exc

    def producer(self) -> LocalProducer:
        return LocalProducer(self.path, self.retention)

    def consumer(self, group: str, topics: Sequence[str]) -> LocalConsumer:
        return LocalConsumer(self.path, group, topics, self.lease_seconds)

    def create_topics(self, topics: Sequence[str]) -> None:
        """Topics exist implicitly."""

    def check(self) -> None:
        try:
            self._conns.get().execute("SELECT max(id) FROM messages").fetchone()
        except sqlite3.OperationalError as exc:
            raise BusUnavailable(f"local bus: {exc}") from exc

    def delivered(self, topic: str, messages: Sequence[tuple[str | None, bytes]],
                  since: float, timeout: float) -> set[int]:
        """See ``Bus.delivered``: the topic's log read backwards (newest first) down to
        ``since``."""
        wanted: dict[tuple[str | None, bytes], list[int]] = {}
        for index, (key, value) in enumerate(messages):
            wanted.setdefault((key, bytes(value)), []).append(index)
        found: set[int] = set()
        conn = self._conns.get()
        conn.execute(f"PRAGMA busy_timeout={max(1, int(timeout * 1000))}")
        try:
            rows = conn.execute("SELECT key, value, ts FROM messages WHERE topic = ? "
                                "ORDER BY id DESC", (topic,))
            for key, value, ts in rows:
                if ts < since:  # appends are stamped in id order (one writer at a time)
                    break
                indexes = wanted.get((key, bytes(value)))
                if indexes:
                    found.add(indexes.pop(0))
                    if len(found) == len(messages):
                        break
        except sqlite3.OperationalError as exc:
            raise BusUnavailable(f"local bus: {exc}") from exc
        return found

    def close(self) -> None:
        self._conns.close()


PRUNE_INTERVAL = 600.0
PRUNE_SQL = (
    "DELETE FROM messages WHERE ts < ? AND id <= COALESCE("
    "(SELECT MIN(committed_id) FROM offsets WHERE offsets.topic = messages.topic), id)"
)


class LocalProducer(Producer):
    def __init__(self, path: Path, retention: float = 168 * 3600.0) -> None:
        self._conns = _Connections(path)
        self._appends = _appends(path)
        self._retention = retention
        self._pruned_at = time.monotonic()

    def prune(self) -> int:
        """Delete what retention allows (see the module docstring); returns how many."""
        cutoff = time.time() - self._retention
        deleted = _in_write_transaction(
            self._conns, lambda c: c.execute(PRUNE_SQL, (cutoff,)).rowcount)
        self._pruned_at = time.monotonic()
        if deleted:
            logger.info("embedded bus: pruned %d messages older than %.0f h", deleted,
                        self._retention / 3600)
        return deleted

    def send(self, messages: Sequence[OutMessage], timeout: float) -> list[bool | Refused]:
        """Append every message in one transaction: all acknowledged, or BusUnavailable."""
        if not messages:
            return []
        conn = self._conns.get()
        conn.execute(f"PRAGMA busy_timeout={max(1, int(timeout * 1000))}")
        now = time.time()
        rows = [(m.topic, m.key, bytes(m.value), now) for m in messages]
        sql = "INSERT INTO messages (topic, key, value, ts) VALUES (?, ?, ?, ?)"
        _in_write_transaction(self._conns, lambda c: c.executemany(sql, rows))
        topics = [m.topic for m in messages]
        self._appends.appended(topics)
        self._appends.doorbell.ring(topics)
        if time.monotonic() - self._pruned_at > PRUNE_INTERVAL:
            try:
                self.prune()
            except BusUnavailable as exc:  # the messages are in; pruning can wait
                logger.warning("embedded bus: pruning failed: %s", exc)
        return [True] * len(messages)

    def close(self) -> None:
        self._conns.close()


class LocalConsumer(Consumer):
    def __init__(self, path: Path, group: str, topics: Sequence[str], lease_seconds: float) -> None:
        self.group = group
        self.topics = list(dict.fromkeys(topics))
        self._members = Path(f"{path}.members")
        self._life = LockFile(self._members)
        # without its file (it could not be made) the owner is no holder's id: its leases
        # are taken only once they expire, as before
        self.owner = self._life.id if self._life.hold() else f"x{uuid.uuid4().hex}"
        self._probe_at: dict[str, float] = {}  # topic -> when to look at its holder again
        self.lease_seconds = lease_seconds
        self._conns = _Connections(path)
        self._leases: dict[str, float] = {}  # topic -> expiry of the lease we hold
        self._position: dict[str, int] = {}  # topic -> last id returned
        self._buffer: deque[Message] = deque()
        self._idle_sleep = MIN_IDLE_SLEEP
        self._appends = _appends(path)
        self._appends.doorbell.listen()
        self._paused = False

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def poll(self, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        if self._paused:  # hold the leases, take nothing
            self._hold_leases()
            time.sleep(max(0.0, timeout))
            return None
        while True:
            mark = self._appends.mark(self.topics)  # before the fetch: no lost wake-up
            message = self._next()
            if message is not None:
                self._idle_sleep = MIN_IDLE_SLEEP
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._appends.wait(self.topics, mark, min(self._idle_sleep, remaining))
            self._idle_sleep = min(self._idle_sleep * 2, MAX_IDLE_SLEEP)

    def commit(self, message: Message) -> None:
        now = time.time()
        statements: list[Statement] = [(
            'INSERT INTO offsets ("group", topic, committed_id) VALUES (?, ?, ?) '
            'ON CONFLICT ("group", topic) DO UPDATE '
            "SET committed_id = max(committed_id, excluded.committed_id)",
            (self.group, message.topic, message.offset),
        )]
        if message.topic in self._leases:
            statements.append(self._renew_statement(message.topic, now))
        counts = _write(self._conns, statements)
        if message.topic in self._leases:
            self._after_renew(message.topic, now, counts[-1])

    def close(self) -> None:
        if self._leases:
            held = list(self._leases)
            self._leases.clear()
            sql = 'DELETE FROM leases WHERE "group" = ? AND topic = ? AND owner = ?'
            try:
                _write(self._conns, [(sql, (self.group, t, self.owner)) for t in held])
            except BusUnavailable as exc:
                logger.warning("group %s: could not release leases (%s); they expire",
                               self.group, exc)
        self._buffer.clear()
        self._conns.close()
        self._appends.doorbell.release()
        self._life.release()

    def _next(self) -> Message | None:
        """The next buffered message of a topic whose lease we hold, fetching when empty."""
        self._hold_leases()
        if not self._buffer:
            self._fetch()
        while self._buffer:
            message = self._buffer.popleft()
            if message.topic in self._leases:
                self._position[message.topic] = message.offset
                return message
        return None

    def _fetch(self) -> None:
        if not self._leases:
            return
        conn = self._conns.get()
        sql = ("SELECT id, topic, key, value FROM messages WHERE topic = ? AND id > ? "
               "ORDER BY id LIMIT ?")
        rows: list[tuple[int, str, str | None, bytes]] = []
        try:
            conn.execute("BEGIN")  # one snapshot for every topic
            try:
                for topic in self._leases:
                    rows.extend(conn.execute(sql, (topic, self._position[topic], FETCH_BATCH)))
            finally:
                conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise BusUnavailable(f"local bus: {exc}") from exc
        rows.sort()
        self._buffer.extend(Message(t, k, bytes(v), 0, i) for i, t, k, v in rows)

    def _hold_leases(self) -> None:
        """Renew the leases that are half spent and try to take those we lack."""
        now = time.time()
        for topic in self.topics:
            expires = self._leases.get(topic)
            if expires is None:
                self._try_acquire(topic, now)
            elif expires - now < self.lease_seconds / 2:
                count = _write(self._conns, [self._renew_statement(topic, now)])[0]
                self._after_renew(topic, now, count)

    def _renew_statement(self, topic: str, now: float) -> Statement:
        return ('UPDATE leases SET expires = ? WHERE "group" = ? AND topic = ? AND owner = ?',
                (now + self.lease_seconds, self.group, topic, self.owner))

    def _after_renew(self, topic: str, now: float, count: int) -> None:
        if count:
            self._leases[topic] = now + self.lease_seconds
        else:
            logger.warning("group %s: lease on %s was taken over; dropping what was fetched",
                           self.group, topic)
            self._leases.pop(topic, None)

    def _try_acquire(self, topic: str, now: float) -> None:
        conn = self._conns.get()
        row = _read_one(conn, 'SELECT owner, expires FROM leases WHERE "group" = ? AND topic = ?',
                        (self.group, topic))
        dead = ""
        if row is not None and row[0] != self.owner and row[1] >= now:
            # another member holds it (checking is a cheap read): unless it died
            if now < self._probe_at.get(topic, 0.0):
                return
            self._probe_at[topic] = now + PROBE_INTERVAL
            if not gone(self._members, row[0]):
                return
            dead = row[0]
        counts = _write(self._conns, [(
            'INSERT INTO leases ("group", topic, owner, expires) VALUES (?, ?, ?, ?) '
            'ON CONFLICT ("group", topic) DO UPDATE SET owner = excluded.owner, '
            "expires = excluded.expires WHERE leases.owner = excluded.owner "
            "OR leases.expires < ? OR leases.owner = ?",
            (self.group, topic, self.owner, now + self.lease_seconds, now, dead),
        )])
        if counts[0]:
            if dead:
                logger.info("group %s: took the lease on %s from member %s, which is gone",
                            self.group, topic, dead)
            self._leases[topic] = now + self.lease_seconds
            self._position[topic] = self._committed(topic)
            self._buffer = deque(m for m in self._buffer if m.topic != topic)
            logger.debug("group %s: took the lease on %s at offset %d", self.group, topic,
                         self._position[topic])

    def _committed(self, topic: str) -> int:
        row = _read_one(self._conns.get(),
                        'SELECT committed_id FROM offsets WHERE "group" = ? AND topic = ?',
                        (self.group, topic))
        return int(row[0]) if row else 0
