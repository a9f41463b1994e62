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

A turn is waited for at most ``timeout`` seconds (the caller's: the database's busy
timeout, 30 s; the embedded bus's, 5 s), then ``TurnTimeout``: a writer that holds it
stuck (a stopped process, a stalled disk) makes the others fail as SQLite's busy handler
would ("database is locked": a 503, a retry), never hang. The kernel's ``flock`` has no
timed wait, so a contended turn is waited for by a thread of the turn's own that blocks in
``flock`` (woken at the unlock, as before); a waiter that gave up has the turn released
the moment that thread gets it.

A turn file is opened once per process (a forked child opens its own: a ``flock`` is
shared by every descriptor of the same open file, so a descriptor inherited across
``fork`` would not exclude the parent).
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SUFFIX = ".write-turn"


class TurnTimeout(Exception):
    """The write turn was not free within the timeout."""


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
        self._waiter: _FlockWaiter | None = None

    @contextmanager
    def __call__(self, deferring: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold the turn; ``TurnTimeout`` when it was not free within ``timeout``
        seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if deferring:
            with self._idle:
                self._idle.wait_for(lambda: not self._urgent, self.MAX_DEFER)
        else:
            with self._idle:
                self._urgent += 1
        try:
            if not self._threads.acquire(timeout=-1 if deadline is None
                                         else max(0.0, deadline - time.monotonic())):
                raise TurnTimeout(f"write turn of {self.path or 'this process'} not free "
                                  f"within {timeout:g}s")
            try:
                fd = self._descriptor()
                if fd is None:
                    yield
                    return
                self._lock(fd, deadline, timeout)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                self._threads.release()
        finally:
            if not deferring:
                with self._idle:
                    self._urgent -= 1
                    if not self._urgent:
                        self._idle.notify_all()

    def _lock(self, fd: int, deadline: float | None, timeout: float | None) -> None:
        # While the waiter thread still waits for (or holds) a turn given up, only it may
        # take the lock: a flock on the same open file would "succeed" at once, and the
        # waiter's release of the given-up turn would then take it from under this one.
        if self._waiter is None or not self._waiter.pending():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if deadline is None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL; woken at the unlock
                return
        if self._waiter is None:
            self._waiter = _FlockWaiter(fd)
        if not self._waiter.lock(None if deadline is None
                                 else max(0.0, deadline - time.monotonic())):
            raise TurnTimeout(f"write turn {self.path} held by another process for over "
                              f"{timeout:g}s")

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
        self._waiter = None


class _FlockWaiter:
    """A thread that takes a contended ``flock`` for the turn's holder-to-be, so that the
    holder can stop waiting at its deadline. One request at a time (the turn's thread lock
    is held around it); a request given up is released as soon as the lock comes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._state = threading.Condition(threading.Lock())
        self._wanted = False  # a request is pending
        self._taken = False  # the pending request's lock is held for its requester
        self._abandoned = False
        threading.Thread(target=self._run, name="write-turn-waiter", daemon=True).start()

    def pending(self) -> bool:
        """A request given up is still waited for, or held until released."""
        with self._state:
            return self._wanted and not self._taken

    def lock(self, timeout: float | None) -> bool:
        with self._state:
            self._wanted, self._taken, self._abandoned = True, False, False
            self._state.notify_all()
            if self._state.wait_for(lambda: self._taken, timeout):
                self._wanted = False
                return True
            self._abandoned = True  # the thread releases it when it gets it
            return False

    def _run(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._wanted and not self._taken)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._state:
                if self._abandoned:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    self._wanted = self._abandoned = False
                    continue
                self._taken = True
                self._state.notify_all()


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
