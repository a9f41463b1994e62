"""A fault-injecting HTTP proxy on loopback, in front of the moto S3 server.

``fault(method, path_and_query)`` decides per request: ``None`` forwards it; ``"500"`` or
``"503"`` answers with that S3 error without forwarding (``"400"``: what S3 answers a
CopyObject of a source over 5 GiB); ``"stall"`` reads the request,
waits ``stall_seconds`` and closes the connection without an answer (an endpoint that
hangs, then drops); ``"reset"`` closes the connection at once with a TCP reset.

``latency`` (seconds) delays every forwarded request (a distant endpoint); ``forwarded``
lists the requests, ``peak`` is the most that were in flight at once (1 for a client that
sends one request after another, however slow the machine).
"""
from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

Fault = Callable[[str, str], "str | None"]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection"}
ERRORS = {"400": ("InvalidRequest", "The specified copy source is larger than the maximum "
                  "allowable size for a copy source: 5368709120"),
          "500": ("InternalError", "We encountered an internal error."),
          "503": ("SlowDown", "Please reduce your request rate.")}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fault: Fault = lambda method, path: None
        self.stall_seconds = 2.0
        self.injected: list[tuple[str, str, str]] = []
        self.latency = 0.0
        self.peak = 0
        self.forwarded: list[tuple[str, str]] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def reset_counts(self) -> None:
        with self._lock:
            self.peak = 0
            self.forwarded.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy.fault(self.command, self.path)
                if action is None:
                    return self._forward_counted(body)
                proxy.injected.append((action, self.command, self.path))
                if action == "stall":
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif action == "reset":
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                else:
                    code, message = ERRORS[action]
                    payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}"
                               f"</Code><Message>{message}</Message></Error>").encode()
                    self.send_response(int(action))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def _forward_counted(self, body: bytes) -> None:
                with proxy._lock:
                    proxy._in_flight += 1
                    proxy.peak = max(proxy.peak, proxy._in_flight)
                    proxy.forwarded.append((self.command, self.path))
                try:
                    if proxy.latency:
                        time.sleep(proxy.latency)
                    self._forward(body)
                finally:
                    with proxy._lock:
                        proxy._in_flight -= 1

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
