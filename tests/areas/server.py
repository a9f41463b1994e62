"""A Tornado server on a thread of its own, on 127.0.0.1 and a port the OS picked, for
tests that need the gateway's part URLs (localdisk direct uploads) without a gateway."""
from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ThreadServer:
    """Serves ``routes(services)`` where ``services`` has ``storage``, ``settings``,
    ``executor`` and ``spawn`` (what the part handler uses)."""

    def __init__(self, sock: socket.socket, storage: Any, settings: Any,
                 routes: Any) -> None:
        self.sock = sock
        self.executor = ThreadPoolExecutor(4)
        self.services = SimpleNamespace(storage=storage, settings=settings,
                                        executor=self.executor, spawn=self._spawn)
        self.routes = routes
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _spawn(self, coro: Any) -> None:
        asyncio.ensure_future(coro)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        server = HTTPServer(tornado.web.Application(self.routes(self.services)))
        server.add_sockets([self.sock])
        self.ready.set()
        self.loop.run_forever()
        server.stop()

    def start(self) -> ThreadServer:
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.executor.shutdown(wait=False)
