"""A small process supervisor: runs child processes (``python app.py ROLE``), restarts one
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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

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
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # a fresh set of listening sockets for each start (passed as LISTEN_FDS)
    sockets: Callable[[], list[socket.socket]] | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping: int | None = None  # the signal being forwarded
        self.code = 0

    def _start(self, child: Child) -> None:
        env = {**os.environ, **child.env, "APP_PROCESS": child.name}
        fds: list[int] = []
        sockets: list[socket.socket] = []
        if child.sockets is not None:
            sockets = child.sockets()
            fds = [s.fileno() for s in sockets]
            env[LISTEN_FDS] = ",".join(map(str, fds))
        try:
            child.process = subprocess.Popen(
                child.argv, env=env, pass_fds=fds, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        finally:
            for sock in sockets:  # the child has its copy
                sock.close()
        child.started = time.monotonic()
        child.restart_at = None
        logger.info("started %s (pid %d)", child.name, child.process.pid)

    def _signal(self, signum: int, _frame: object) -> None:
        if self.stopping is None:
            logger.info("signal %d: stopping %d processes", signum, len(self.children))
        self.stopping = signum
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                try:
                    child.process.send_signal(signum)
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
            if child.process is None:
                continue
            while True:
                try:
                    code = child.process.wait()
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    continue
            if code not in (0, -signal.SIGTERM, -signal.SIGINT) and not self.code:
                logger.warning("%s exited with %d", child.name, code)
                self.code = code if code > 0 else 1
        logger.info("stopped")
        return self.code

    def _check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None or self.stopping is not None:
                continue
            child.process = None
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


def inherited_sockets() -> list[socket.socket] | None:
    """The listening sockets a supervisor handed to this process (``LISTEN_FDS``)."""
    value = os.environ.pop(LISTEN_FDS, None)  # not for the processes this one starts
    if not value:
        return None
    return [socket.socket(fileno=int(fd)) for fd in value.split(",")]


def child_argv(*args: str) -> list[str]:
    return [sys.executable, os.path.abspath(sys.argv[0]), *args]
