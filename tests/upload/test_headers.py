"""Oversized request headers (issue 11 item 6): every server of ours (the gateway, and the
status servers of the watcher and the puller) answers 431 with the JSON error body, past
64 KiB (the tus endpoint: past 1 MiB), instead of closing the connection without a word."""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from core.services import Services
from core.settings import Settings
from tests.helpers import free_port
from upload.app import http_server, make_app
from watcher.service import status_app


class Served:
    """The gateway's and the watcher's status applications on loopback ports, served
    by ``http_server`` on an event loop of their own."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.ports = {"gateway": free_port(), "watcher": free_port()}
        self.servers: list[Any] = []

    def start(self) -> Served:
        self.thread.start()

        async def listen() -> None:
            for name, app in (("gateway", make_app(self.services)),
                              ("watcher", status_app(self.services))):
                server = http_server(app)
                server.listen(self.ports[name], "127.0.0.1")
                self.servers.append(server)

        asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        return self

    def stop(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    services = Services.build(Settings.from_env({"WORKDIR": str(tmp_path / "work")}))
    running = Served(services).start()
    yield running
    running.stop()
    services.close()


def ask(port: int, path: str, header_bytes: int) -> tuple[int, bytes]:
    """(status, body); (0, b"") when the server closed without an answer."""
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-Padding: {'a' * header_bytes}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        try:
            sock.sendall(head)
        except OSError:
            pass  # answered (or gave up) before the whole request was sent
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            return 0, b""
    finally:
        sock.close()


@pytest.mark.parametrize(("server", "path", "size", "expected"), [
    ("gateway", "/api/v1/version", 70 * 1024, 431),
    ("gateway", "/api/v1/version", 60 * 1024, 200),
    ("gateway", "/api/v1/tus/", 200 * 1024, 412),  # tus reads up to 1 MiB (no Tus-Resumable)
    ("gateway", "/api/v1/tus/", 1100 * 1024, 431),
    ("gateway", "/api/v1/version", 1100 * 1024, 431),
    ("watcher", "/livez", 70 * 1024, 431),
    ("watcher", "/livez", 60 * 1024, 200),
    ("watcher", "/livez", 1100 * 1024, 431),
])
def test_oversized_headers_get_431(served: Served, server: str, path: str, size: int,
                                   expected: int) -> None:
    status, body = ask(served.ports[server], path, size)
    assert status == expected, (status, body[:200])
    if expected == 431:
        assert json.loads(body)["error"] == "headers_too_large"
