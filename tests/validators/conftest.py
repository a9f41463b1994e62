"""A tiny HTTP server for payload URLs (status and body per path, requests counted), and
helpers to announce payloads and read answers back from the bus."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from bus import Bus, OutMessage


class PayloadServer:
    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, bytes]]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                answers = server.routes.get(self.path) or [(404, b"")]
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, body: bytes, *before: int) -> str:
        """Serve ``body`` at ``path``, after answering the statuses ``before`` once each."""
        self.routes[path] = [*((status, b"") for status in before), (200, body)]
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payloads() -> Iterator[PayloadServer]:
    server = PayloadServer()
    yield server
    server.close()


def announcement(request_id: str, url: str, data: bytes, service: str = "svc",
                 content_type: str = "application/vnd.redhat.svc.thing+tgz", **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "payload_id": request_id, "service": service,
            "category": "thing", "content_type": content_type, "size": len(data), "url": url,
            "checksums": {"sha256": hashlib.sha256(data).hexdigest()}, "metadata": {},
            **extra}


def announce(bus: Bus, topic: str, *messages: dict[str, Any] | bytes) -> None:
    producer = bus.producer()
    out = [OutMessage(topic, m.get("request_id") if isinstance(m, dict) else None,
                      m if isinstance(m, bytes) else json.dumps(m).encode()) for m in messages]
    assert all(producer.send(out, 10))
    producer.close()


def read(bus: Bus, topic: str, count: int, timeout: float = 20.0, group: str | None = None,
         where: Callable[[dict[str, Any]], bool] = lambda m: True) -> list[dict[str, Any]]:
    """The first ``count`` messages of ``topic`` that match ``where`` (a fresh group unless
    named)."""
    consumer = bus.consumer(group or f"reader-{time.monotonic_ns()}", [topic])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and where(value := json.loads(message.value)):
                found.append(value)
    finally:
        consumer.close()
    return found
