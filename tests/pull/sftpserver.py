"""A real SFTP server on loopback for the tests (asyncssh's, chrooted to a directory), on
its own asyncio loop in a thread, with the faults the tests need: a connection cut once a
number of bytes were served, files that vanish or are refused when opened, slow reads,
and a count of the bytes served."""
from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import asyncssh


class SFTPTestServer:
    def __init__(self, root: Path, user: str = "puller", password: str = "sftp-secret-pw",
                 client_key: asyncssh.SSHKey | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.password = password
        self.client_key = client_key
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.bytes_served = 0
        self.opened: list[str] = []
        self.cut_after: int | None = None  # abort the connection once this many bytes went
        self.cuts = 0
        self.deny: set[str] = set()  # relative paths whose open is refused (EACCES)
        self.vanish: set[str] = set()  # relative paths removed when they are opened
        self.read_delay = 0.0
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._acceptor: Any = None
        self._lock = threading.Lock()

    @property
    def host_key_line(self) -> str:
        return self.host_key.export_public_key().decode().strip()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> SFTPTestServer:
        self._thread.start()
        self.call(self._listen())
        return self

    async def _listen(self) -> None:
        owner = self
        self._acceptor = await asyncssh.listen(
            "127.0.0.1", self.port, server_host_keys=[self.host_key],
            server_factory=lambda: _Server(owner),
            sftp_factory=lambda chan: _SFTP(chan, owner), allow_scp=False)
        self.port = self._acceptor.sockets[0].getsockname()[1]

    def go_down(self) -> None:
        """Stop listening and drop every connection (the port stays ours to reuse)."""
        self.call(self._close())

    def come_back(self) -> None:
        self.call(self._listen())

    async def _close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None

    def stop(self) -> None:
        self.call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> SFTPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def served(self, count: int) -> bool:
        """Count ``count`` bytes; True when the connection must be cut now."""
        with self._lock:
            self.bytes_served += count
            if self.cut_after is not None and self.bytes_served >= self.cut_after:
                self.cut_after = None
                self.cuts += 1
                return True
        return False


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: SFTPTestServer) -> None:
        self.owner = owner

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.owner.connections += 1

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.owner.user and password == self.owner.password

    def public_key_auth_supported(self) -> bool:
        return self.owner.client_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        expected = self.owner.client_key
        return (username == self.owner.user and expected is not None
                and key.public_data == expected.public_data)


class _SFTP(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, owner: SFTPTestServer) -> None:
        super().__init__(chan, chroot=str(owner.root).encode())
        self.owner = owner

    def _relative(self, path: bytes) -> str:
        local = self.map_path(path).decode("utf-8", "surrogateescape")
        return os.path.relpath(local, os.path.realpath(self.owner.root))

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> Any:
        relative = self._relative(path)
        self.owner.opened.append(relative)
        if relative in self.owner.deny:
            raise PermissionError(errno.EACCES, "permission denied")
        if relative in self.owner.vanish:
            os.unlink(self.map_path(path))
        return super().open(path, pflags, attrs)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if self.owner.read_delay:
            await asyncio.sleep(self.owner.read_delay)
        data: bytes = super().read(file_obj, offset, size)  # type: ignore[assignment]
        if self.owner.served(len(data)):
            self.connection.abort()
        return data
