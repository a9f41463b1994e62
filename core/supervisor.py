"""A small process supervisor: runs child processes (forked copies of itself, each running
one part of ``python app.py``), restarts one
that dies with a backoff, forwards SIGTERM/SIGINT to all of them and waits for them to
finish (each drains its own in-flight uploads), then exits with their exit code.

Used by ``python app.py`` (every role in its own process) and by
``python app.py gateway --workers N`` (N gateway processes on one port).

- One log stream: the children inherit the supervisor's stdout and stderr.
- A child gets SIGKILL when the supervisor dies (``PR_SET_PDEATHSIG``), so a supervisor
  killed with SIGKILL leaves no process behind holding the port or the databases.
- A child that exits with 2 (a configuration error: it would fail the same way again) is
  not restarted: the others are stopped and the supervisor exits 2. Any other exit while
  the supervisor is not stopping is a crash: the child is started again after 1 s,
  doubling to ``MAX_BACKOFF`` while it keeps dying within ``STABLE_AFTER`` seconds.
- Listening sockets (``sockets``): made by the supervisor for each start of a child
  (``SO_REUSEPORT`` when several children listen on one port) and handed to it as file
  descriptors in ``LISTEN_FDS``; the supervisor keeps no copy, so a child that stops
  listening (a drain) takes its socket with it, and a restarted child gets a fresh one.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable

from core.logs import PROCESS_ENV, name_process

logger = logging.getLogger("supervisor")

MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0
POLL = 0.1
LISTEN_FDS = "LISTEN_FDS"
CONFIG_ERROR = 2


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """A process of the supervisor: ``run`` is called in a forked copy of the supervisor
    (the modules are imported already, so a child starts at once and the children share
    those pages) and returns its exit code."""
    name: str
    run: Callable[[], int]
    # a fresh set of listening sockets for each start (passed as LISTEN_FDS)
    sockets: Callable[[], list[socket.socket]] | None = None
    pid: int | None = None
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    restarts: int = 0


def _in_child(child: Child, sockets: list[socket.socket]) -> None:  # pragma: no cover
    """The forked child: never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with_parent()
        os.environ[PROCESS_ENV] = child.name
        if sockets:
            os.environ[LISTEN_FDS] = ",".join(str(s.detach()) for s in sockets)
        name_process(child.name)
        code = child.run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, then the child exits 1
        logger.exception("%s failed", child.name)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping: int | None = None  # the signal being forwarded
        self.code = 0

    def _start(self, child: Child) -> None:
        sockets = child.sockets() if child.sockets is not None else []
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
            if pid == 0:
                _in_child(child, sockets)
        finally:
            for sock in sockets:  # the child has its copy
                sock.close()
        child.pid = pid
        child.started = time.monotonic()
        child.restart_at = None
        logger.info("started %s (pid %d)", child.name, pid)

    def _signal(self, signum: int, _frame: object) -> None:
        if self.stopping is None:
            logger.info("signal %d: stopping %d processes", signum, len(self.children))
        self.stopping = signum
        for child in self.children:
            if child.pid is not None:
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        """Start every child, supervise them until a signal, then wait for all of them."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        for child in self.children:
            self._start(child)
        while self.stopping is None:
            self._check()
            time.sleep(POLL)
        for child in self.children:
            if child.pid is None:
                continue
            code = _exit_code(os.waitpid(child.pid, 0)[1])
            child.pid = None
            if code not in (0, -signal.SIGTERM, -signal.SIGINT) and not self.code:
                logger.warning("%s exited with %d", child.name, code)
                self.code = code if code > 0 else 1
        logger.info("stopped")
        return self.code

    def _check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.pid is None:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
                continue
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid == 0 or self.stopping is not None:
                continue
            code = _exit_code(status)
            child.pid = None
            if code == CONFIG_ERROR:
                logger.error("%s exited with a configuration error; stopping", child.name)
                self.code = CONFIG_ERROR
                self._signal(signal.SIGTERM, None)
                return
            if now - child.started >= STABLE_AFTER:
                child.backoff = 1.0
            child.restarts += 1
            child.restart_at = now + child.backoff
            logger.warning("%s (exit %d) died; restarting it in %.0f s", child.name, code,
                           child.backoff)
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)


def _exit_code(status: int) -> int:
    """``waitpid``'s status as ``Popen.returncode`` says it (minus the signal)."""
    return os.waitstatus_to_exitcode(status)


def inherited_sockets() -> list[socket.socket] | None:
    """The listening sockets a supervisor handed to this process (``LISTEN_FDS``)."""
    value = os.environ.pop(LISTEN_FDS, None)  # not for the processes this one starts
    if not value:
        return None
    return [socket.socket(fileno=int(fd)) for fd in value.split(",")]


