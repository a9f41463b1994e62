"""One SFTP session with a provider (asyncssh): connect, list, download with resume, and
the completion action on the source.

- Connecting: the provider's user with its password or private key; the server's host key
  must be in ``known_hosts`` or be ``host_key`` (unknown keys are refused unless
  ``accept_unknown_host_key``). No ``~/.ssh/config``, agent or default keys are used.
- Listing: the provider's ``directory`` (recursively when asked, without following
  symbolic links, leaving out the ``move_to`` folder), regular files only; ``.sig`` files,
  hidden and temporary names (``core.steps.is_ignored``), names that are not UTF-8 and
  names no ``pattern`` matches are skipped (counted).
- Downloading (``Download``): parallel reads (``REQUESTS`` of ``BLOCK`` bytes in flight)
  written in order into an incomplete local file from a byte offset, so a transfer that
  was cut resumes where its last checkpoint says instead of starting again.

Every request waits at most the provider's ``timeout`` (30 s) for an answer: a server that
stops answering is treated as one that went away.

Errors: ``ServerGone`` (the connection failed, dropped or stopped answering: the job
retries with backoff),
``Refused`` (host key or credentials refused: retrying would not help) and, per file,
``RemoteFileError`` (``vanished``, ``permission_denied``, ``remote_error``, ``changed``).
"""
from __future__ import annotations

import asyncio
import builtins
import logging
import posixpath
import stat
from dataclasses import dataclass
from typing import Any

import asyncssh

from core.steps import is_ignored
from pull.config import Provider
from pull.store import Remote

logger = logging.getLogger(__name__)

BLOCK = 256 * 1024
REQUESTS = 32
KEEPALIVE_SECONDS = 15.0


class ServerGone(Exception):
    """The server cannot be reached, or the connection dropped."""


class Refused(ServerGone):
    """The server refused us (host key, credentials): retrying will not help."""


class RemoteFileError(Exception):
    """This file cannot be fetched (or disposed of); ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def file_error(exc: asyncssh.SFTPError, what: str) -> Exception:
    """An SFTP error about one file, or ``ServerGone`` when it is the connection's."""
    if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
        return ServerGone(f"connection lost: {exc.reason}")
    if isinstance(exc, (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)):
        return RemoteFileError("vanished", f"{what}: the file is no longer on the server")
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return RemoteFileError("permission_denied", f"{what}: permission denied")
    return RemoteFileError("remote_error", f"{what}: {exc.reason or type(exc).__name__}")


def connection_error(exc: BaseException) -> ServerGone:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return Refused("the server's host key is not the one configured (known_hosts/host_key)")
    if isinstance(exc, asyncssh.PermissionDenied):
        return Refused("the server refused our credentials")
    if isinstance(exc, asyncio.TimeoutError):
        return ServerGone("timed out")
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return ServerGone(f"{type(exc).__name__}: {reason}")


CONNECTION_ERRORS = (OSError, asyncssh.Error, asyncio.TimeoutError)


def known_hosts(provider: Provider) -> Any:
    if provider.host_key:
        return ([asyncssh.import_public_key(provider.host_key)], [], [])
    if provider.known_hosts:
        return str(provider.known_hosts)
    return None  # accept_unknown_host_key (checked at start-up)


class Session:
    """A connection and its SFTP client; ``async with`` closes both."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.conn: asyncssh.SSHClientConnection | None = None
        self.sftp: asyncssh.SFTPClient | None = None

    async def __aenter__(self) -> Session:
        p = self.provider
        options: dict[str, Any] = {
            "port": p.port, "username": p.user, "known_hosts": known_hosts(p), "config": None,
            "agent_path": None, "connect_timeout": p.timeout, "login_timeout": p.timeout,
            "keepalive_interval": KEEPALIVE_SECONDS, "keepalive_count_max": 3,
        }
        if p.private_key is not None:
            key = asyncssh.read_private_key(p.private_key, p.private_key_passphrase)
            options.update(client_keys=[key], password=None,
                           preferred_auth="publickey")
        else:
            options.update(client_keys=None, password=p.password,
                           preferred_auth="password,keyboard-interactive")
        try:
            self.conn = await asyncssh.connect(p.host, **options)
            self.sftp = await asyncio.wait_for(self.conn.start_sftp_client(), p.timeout)
        except CONNECTION_ERRORS as exc:
            await self.close()
            raise connection_error(exc) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.sftp is not None:
            self.sftp.exit()
            self.sftp = None
        if self.conn is not None:
            self.conn.close()
            try:
                await asyncio.wait_for(self.conn.wait_closed(), 5)
            except (TimeoutError, *CONNECTION_ERRORS):
                pass
            self.conn = None

    def client(self) -> asyncssh.SFTPClient:
        if self.sftp is None:
            raise ServerGone("not connected")
        return self.sftp

    def remote_path(self, relative: str) -> str:
        return posixpath.join(self.provider.directory, relative)

    # listing --------------------------------------------------------------------------------

    async def list(self) -> tuple[list[Remote], int]:
        """The provider's files to consider, and how many names were skipped."""
        found: list[Remote] = []
        skipped = 0
        pending = [""]
        excluded = self._excluded()
        while pending:
            relative_dir = pending.pop()
            try:
                entries = await asyncio.wait_for(self._scan(
                    self.remote_path(relative_dir) if relative_dir else self.provider.directory),
                    self.provider.timeout)
            except asyncssh.SFTPError as exc:
                error = file_error(exc, f"listing {relative_dir or self.provider.directory}")
                if isinstance(error, ServerGone) or not relative_dir:
                    raise error if isinstance(error, ServerGone) else ServerGone(
                        f"cannot list the directory: {error}") from None
                logger.warning("provider=%s %s", self.provider.name, error)
                continue
            except CONNECTION_ERRORS as exc:
                raise connection_error(exc) from None
            for entry in entries:
                name = entry.filename
                if not isinstance(name, str) or name in (".", "..") or "/" in name \
                        or "\x00" in name:
                    continue  # a hostile server's names never become paths
                relative = posixpath.join(relative_dir, name) if relative_dir else name
                kind = _kind(entry.attrs)
                if kind == "dir":
                    if self.provider.recursive and relative not in excluded \
                            and not is_ignored(relative):
                        pending.append(relative)
                    continue
                if kind != "file":
                    continue
                if not self._wanted(relative):
                    skipped += 1
                    continue
                found.append(Remote(relative, int(entry.attrs.size or 0),
                                    int(entry.attrs.mtime or 0)))
        found.sort(key=lambda remote: remote.path)
        return found, skipped

    async def _scan(self, path: str) -> builtins.list[asyncssh.SFTPName]:
        return [entry async for entry in self.client().scandir(path)]

    def _wanted(self, relative: str) -> bool:
        if relative.lower().endswith(".sig") or is_ignored(relative):
            return False
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            logger.warning("provider=%s skipping a name that is not UTF-8: %r",
                           self.provider.name, relative)
            return False
        return self.provider.matches(relative)

    def _excluded(self) -> set[str]:
        """``move_to`` as a path relative to the directory, when it lies inside it."""
        if not self.provider.move_to:
            return set()
        base = posixpath.normpath(self.provider.directory)
        target = posixpath.normpath(posixpath.join(self.provider.directory, self.provider.move_to))
        if base == ".":
            return {target}
        prefix = base.rstrip("/") + "/"
        return {target[len(prefix):]} if target.startswith(prefix) else set()

    # completion -----------------------------------------------------------------------------

    async def dispose(self, relative: str) -> str:
        """The provider's completion action on ``relative``: ``left``, ``moved`` or
        ``deleted`` (``gone`` when it had vanished already)."""
        action = self.provider.completion
        if action == "leave":
            return "left"
        source = self.remote_path(relative)
        try:
            if action == "delete":
                await asyncio.wait_for(self.client().remove(source), self.provider.timeout)
                return "deleted"
            assert self.provider.move_to is not None
            await asyncio.wait_for(self._move(source, posixpath.join(
                self.provider.move_to, relative)), self.provider.timeout)
            return "moved"
        except asyncssh.SFTPError as exc:
            error = file_error(exc, f"{action} {relative}")
            if isinstance(error, RemoteFileError) and error.code == "vanished":
                return "gone"
            raise error from None
        except CONNECTION_ERRORS as exc:
            raise connection_error(exc) from None

    async def _move(self, source: str, target: str) -> None:
        sftp = self.client()
        parent = posixpath.dirname(target)
        if parent:
            await sftp.makedirs(parent, exist_ok=True)
        stem, dot, ext = posixpath.basename(target).partition(".")
        for n in range(1, 1000):
            candidate = target if n == 1 else posixpath.join(parent, f"{stem}-{n}{dot}{ext}")
            if await sftp.exists(candidate):
                continue
            await sftp.rename(source, candidate)
            return
        raise RemoteFileError("remote_error", f"no free name for {target}")


def _kind(attrs: asyncssh.SFTPAttrs) -> str:
    if attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
        return "file"
    if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
        return "dir"
    if attrs.type in (None, asyncssh.FILEXFER_TYPE_UNKNOWN) and attrs.permissions is not None:
        if stat.S_ISREG(attrs.permissions):
            return "file"
        if stat.S_ISDIR(attrs.permissions):
            return "dir"
    return "other"


@dataclass
class Fetched:
    """A finished download: the local file holds ``size`` bytes."""

    size: int
    read: int  # bytes read from the server by this attempt
