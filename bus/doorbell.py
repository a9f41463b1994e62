"""Cross-process wake-ups for the embedded bus: a producer that appended to topics rings
the other processes of the machine, so their idle consumers fetch at once instead of at
their next poll (2 ms backing off to 20 ms, bus/local.py).

``python app.py`` runs each role in its own process, so three of the bus hops on the way
from an upload to ``platform.upload.available`` (the announcement to the validators, the
verdict back to the gateway, the announcement to downstream consumers) cross processes.

Each process that consumes from the bus binds one Unix datagram socket in
``<bus file>.bells/`` (named after its pid and a random token) and runs a daemon thread
that turns each datagram (topic names separated by newlines) into the same in-process
notification a local ``send`` gives (``_Appends.appended``). A producer, after its
transaction committed, sends one datagram to every other socket of that directory
(listed again only when the directory changes), without blocking: a full receive buffer
(the consumer is busy and will fetch anyway) is ignored, a socket nobody listens on (its
process died) is removed. The doorbell only ever makes a consumer look sooner: nothing is
lost when a datagram is, and anything in a datagram besides topic names is ignored.

Socket addresses are at most 107 bytes; a deeper directory is reached through
``/proc/self/fd/<fd of the directory>``. Where neither works (no ``AF_UNIX``, a
read-only directory), the bus polls as before and logs why once.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

logger = logging.getLogger(__name__)

MAX_ADDRESS = 107  # sun_path holds 108 bytes with its terminating NUL
MAX_DATAGRAM = 4096
SUFFIX = ".bell"


class Doorbell:
    """The doorbells of one bus file, in this process."""

    def __init__(self, bus_path: Path, notify: Callable[[Sequence[str]], None]) -> None:
        self.directory = Path(str(bus_path) + ".bells")
        self._notify = notify
        self._lock = threading.Lock()
        self._pid = 0  # the process that set up the sockets below (a fork starts again)
        self._disabled = False
        self._dir_fd: int | None = None
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._own = ""
        self._users = 0  # consumers of this process that listen
        self._members: list[str] = []
        self._listed_at: int | None = None  # st_mtime_ns of the directory when listed
        self._listed_when = 0.0  # time.monotonic() of that listing

    # --- consumers' side -------------------------------------------------------------
    def listen(self) -> None:
        """Receive this bus's rings in this process, until as many ``release`` calls."""
        with self._lock:
            if not self._ready():
                return
            self._users += 1
            if self._listener is not None:
                return
            name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._address(name))
            except OSError as exc:
                sock.close()
                self._disable(f"cannot bind a socket in {self.directory}: {exc}")
                return
            self._listener, self._own = sock, name
            atexit.register(self._remove_own, os.getpid(), name)
        threading.Thread(target=self._receive, args=(sock,), name="bus-doorbell",
                         daemon=True).start()

    def release(self) -> None:
        """One listening consumer closed; the last one closes the socket."""
        with self._lock:
            if self._pid != os.getpid() or self._users == 0:
                return
            self._users -= 1
            if self._users or self._listener is None:
                return
            sock, self._listener, name, self._own = self._listener, None, self._own, ""
        self._remove_own(os.getpid(), name)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv
        sock.close()

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(MAX_DATAGRAM)
            except OSError:
                return  # closed
            if not data and self._listener is not sock:
                return  # shut down by release
            try:
                topics = [t for t in data.decode("utf-8").split("\n") if t]
            except UnicodeDecodeError:
                continue
            if topics:
                self._notify(topics)

    # --- producers' side -------------------------------------------------------------
    def ring(self, topics: Sequence[str]) -> None:
        """Tell every other listening process that ``topics`` got messages."""
        with self._lock:
            if not self._ready():
                return
            members = self._current_members()
            sender = self._sender
        if not members or sender is None:
            return
        payload = "\n".join(dict.fromkeys(topics)).encode("utf-8")[:MAX_DATAGRAM]
        for name in members:
            try:
                sender.sendto(payload, self._address(name))
            except (BlockingIOError, InterruptedError):
                continue  # its buffer is full: it has rings to read already
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(name)  # its process is gone
            except OSError as exc:
                logger.debug("bus doorbell %s: %s", name, exc)

    # --- both ---------------------------------------------------------------------------
    def _ready(self) -> bool:
        """Sockets for this process (after a fork, new ones); False when disabled."""
        if self._disabled:
            return False
        if self._pid == os.getpid():
            return True
        self._listener, self._own, self._users = None, "", 0  # the parent's, it reads them
        self._members, self._listed_at = [], None
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        except OSError as exc:
            self._disable(f"cannot use {self.directory}: {exc}")
            return False
        self._pid = os.getpid()
        return True

    def _address(self, name: str) -> str:
        path = str(self.directory / name)
        if len(path.encode()) <= MAX_ADDRESS:
            return path
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def _current_members(self) -> list[str]:
        try:
            changed = os.stat(self.directory).st_mtime_ns
        except OSError:
            return []
        now = time.monotonic()
        # listed again when the directory changed, and every second (a socket bound in
        # the same clock tick as the last listing leaves the directory's mtime as it was)
        if changed != self._listed_at or now - self._listed_when > 1.0:
            try:
                names = os.listdir(self.directory)
            except OSError:
                return []
            self._members = [n for n in names if n.endswith(SUFFIX) and n != self._own]
            self._listed_at, self._listed_when = changed, now
        return self._members

    def _forget(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.directory / name)
        with self._lock:
            if name in self._members:
                self._members = [n for n in self._members if n != name]

    def _remove_own(self, pid: int, name: str) -> None:
        if os.getpid() == pid:
            with contextlib.suppress(OSError):
                os.unlink(self.directory / name)

    def _disable(self, why: str) -> None:
        self._disabled = True
        logger.warning("embedded bus: no cross-process wake-ups (%s); consumers of other "
                       "processes see new messages at their next poll", why)
