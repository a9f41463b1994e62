"""Write turns for SQLite files: the writers of every process on the machine take turns
on one lock per database file, so that the next writer starts the moment the last one
commits.

SQLite has one writer at a time. A writer that finds the write lock taken waits in its
busy handler, which polls by sleeping 1, 2, 5, 10 ... 100 ms between attempts: it does not
wake when the lock is freed, so under steady writes from several threads or processes
each wait costs a sleep or more, and the waiters miss the free moments. A write turn is
an exclusive ``flock`` on ``<database file>.write-turn`` (inside it a ``threading.Lock``
for the threads of one process), taken just before the transaction begins and released
right after its COMMIT or ROLLBACK; the kernel hands it to the next process as soon as
it is released, and releases it when its holder dies (a crash cannot leave it held).

Contract: hold a turn only around one write transaction, never across anything else (a
network call, another turn's wait: the database's turn may be held while the embedded
bus's is taken, never the other way round). Writers that do not take turns (rare
writes: sign-in, pull jobs, the bundler) still meet SQLite's busy handler and its busy
timeout, which stays as the safety net.

Kept because it pays (issue 14, bench/README.md, 2026-12-01, busy 2-core Xeon VM):
``gateway --workers 2`` on embedded SQLite spent 3.0-3.2 s of its threads' time per 4 s
in SQLite's busy-handler sleeps (392-406 sleeps of 1 to 100 ms, bench/busy_sleeps.py) and
its p99 was 219-974 ms; with turns there is no such sleep (~1,700 ``flock`` calls
instead), the p99 is 49-71 ms, and two processes take 1.17x one process's rate (median of
8 pairs; 1.04x before). One process is unchanged within the noise (two uncontended
``flock`` calls per transaction).

Within a process, a ``deferring`` writer (the outbox relay's bookkeeping: it only delays
messages that are safe in the outbox already) lets the others (an upload's group commit
before its 202, a verdict) go first while any wait, for at most ``MAX_DEFER`` (50 ms), so
it is never starved. Under the small-upload load the relay held the turn 13 ms (p50) per
pass, about half the time, while the group commit waited for it up to 13 ms (p90); with
the relay deferring, role gateway took 409 / 418 uploads/s against 358 / 367 alternating
(bench/small_uploads.py --role gateway --seconds 8, busy 2-core Xeon, 2026-12-01).

A turn file is opened once per process (a forked child opens its own: a ``flock`` is
shared by every descriptor of the same open file, so a descriptor inherited across
``fork`` would not exclude the parent).
"""
from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SUFFIX = ".write-turn"


class WriteTurn:
    """The write turn of one SQLite file (``path``), or of one process only when
    ``path`` is None (an in-memory database)."""

    MAX_DEFER = 0.05

    def __init__(self, path: Path | None) -> None:
        self.path = None if path is None else Path(f"{path}{SUFFIX}")
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._idle = threading.Condition(threading.Lock())
        self._urgent = 0  # this process's writers waiting or writing that do not defer

    @contextmanager
    def __call__(self, deferring: bool = False) -> Iterator[None]:
        if deferring:
            with self._idle:
                self._idle.wait_for(lambda: not self._urgent, self.MAX_DEFER)
        else:
            with self._idle:
                self._urgent += 1
        try:
            with self._threads:
                fd = self._descriptor()
                if fd is None:
                    yield
                    return
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL; woken at the unlock
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            if not deferring:
                with self._idle:
                    self._urgent -= 1
                    if not self._urgent:
                        self._idle.notify_all()

    def _descriptor(self) -> int | None:
        if self.path is not None and self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _after_fork(self) -> None:
        """In a forked child: a lock of its own, and its own open file (see the module
        docstring); the parent's descriptor stays open, unused."""
        self._threads = threading.Lock()
        self._fd = None
        self._idle = threading.Condition(threading.Lock())
        self._urgent = 0


_TURNS: dict[str, WriteTurn] = {}
_TURNS_LOCK = threading.Lock()


def write_turn(database: str | Path | None) -> WriteTurn:
    """The process's write turn of the SQLite file ``database`` (one per file, however
    many connections, engines and objects use it); None or ``:memory:``: a turn of this
    call's own, for the threads of this process."""
    if database is None or str(database) in ("", ":memory:"):
        return WriteTurn(None)
    key = os.path.realpath(database)
    with _TURNS_LOCK:
        turn = _TURNS.get(key)
        if turn is None:
            turn = _TURNS[key] = WriteTurn(Path(key))
        return turn


def _reset_after_fork() -> None:
    global _TURNS_LOCK
    _TURNS_LOCK = threading.Lock()
    for turn in _TURNS.values():
        turn._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
