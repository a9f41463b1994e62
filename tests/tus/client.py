"""A raw tus client for tests (http.client: any header, any value, bodies in pieces), a
TCP proxy that cuts one connection mid-body, and payload helpers."""
from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import identity

CONTENT_TYPE = "application/vnd.redhat.testareno.tus+tgz"
VERSION = {"Tus-Resumable": "1.0.0"}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Tus:
    base: str  # http://127.0.0.1:port
    ident: str | None = field(default_factory=identity)
    prefix: str = "/api/v1/tus/"

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, timeout: float = 60) -> Answer:
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            sent = dict(VERSION)
            if self.ident is not None:
                sent["x-rh-identity"] = self.ident
            sent.update(headers or {})
            sent = {k: v for k, v in sent.items() if v is not None}
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                          data)
        finally:
            conn.close()

    def path(self, location: str) -> str:
        return urlsplit(location).path

    def create(self, length: int | None, headers: dict[str, str] | None = None,
               body: bytes | None = None, content_type: str = CONTENT_TYPE,
               **meta: str) -> Answer:
        sent = {"Upload-Metadata": metadata(**{"filetype": content_type, "filename": "p.tgz",
                                               **meta})}
        if length is not None:
            sent["Upload-Length"] = str(length)
        if body is not None:
            sent["Content-Type"] = "application/offset+octet-stream"
        sent.update(headers or {})
        return self.request("POST", self.prefix, sent, body)

    def new(self, length: int | None, **kwargs: Any) -> str:
        answer = self.create(length, **kwargs)
        assert answer.status == 201, (answer.status, answer.body)
        return self.path(answer.header("Location") or "")

    def patch(self, path: str, offset: int, data: bytes,
              headers: dict[str, str] | None = None) -> Answer:
        sent = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        sent.update(headers or {})
        return self.request("PATCH", path, sent, data)

    def head(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self.request("HEAD", path, headers)

    def offset(self, path: str) -> int:
        answer = self.head(path)
        assert answer.status == 200, answer
        return int(answer.header("Upload-Offset") or -1)


class CutProxy:
    """Forwards TCP connections to ``upstream``; once clients have sent ``cut_after``
    bytes in all, the connection carrying that byte is closed right there (once)."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self.total = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with self._lock:
                        keep = self.cut_after - self.total
                        self.total += len(data)
                        if self.cuts == 0 and 0 <= keep < len(data):
                            self.cuts += 1
                            target.sendall(data[:keep])
                            raise ConnectionError("cut")
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
