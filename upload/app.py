"""The Tornado application: every API route under /api/v1/ and /api/ingress/v1/."""
from __future__ import annotations

import json
import socket
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

import tus
from areas.routes import routes as area_routes
from auth import Authenticator
from auth import pages as auth_pages
from auth.setup import build_authenticator
from consumer import api as bundler_api
from core.services import Services
from upload import api, callbacks
from upload.handlers import UploadHandler

PREFIXES = ("/api/v1", "/api/ingress/v1")


def routes(services: Services) -> list[Any]:
    deps = {"services": services}
    table: list[Any] = []
    for prefix in PREFIXES:
        table += [
            (rf"{prefix}/upload", UploadHandler, deps),
            (rf"{prefix}/uploads/([A-Za-z0-9._-]{{1,64}})", api.StatusHandler, deps),
            (rf"{prefix}/version", api.VersionHandler, deps),
            (rf"{prefix}/health", api.HealthHandler, deps),
            (rf"{prefix}/openapi.json", api.OpenApiHandler, deps),
            (rf"{prefix}/callbacks/([A-Za-z0-9._-]{{1,64}})", callbacks.CallbackHandler, deps),
        ]
    table += [
        (r"/api/v1/download/([a-z]+)/([A-Za-z0-9._/-]{1,255})", api.DownloadHandler, deps),
        (r"/metrics", api.MetricsHandler, deps),
        (r"/livez", api.LiveHandler, deps),
        (r"/readyz", api.ReadyHandler, deps),
    ]
    table += bundler_api.routes(services, PREFIXES)
    table += auth_pages.routes()
    table += tus.routes(services, PREFIXES)
    table += area_routes(services, PREFIXES)
    return table


# Every server of ours (the gateway, the watcher's and the puller's status servers: all
# made by http_server) reads request headers up to MAX_HEADER_SIZE (1 MiB) so that a tus
# concatenation naming thousands of partial uploads gets a clear 400; every other request
# keeps Tornado's usual 64 KiB and gets 431 past it, and past 1 MiB any request gets 431
# (HeaderLimitStream) instead of a connection closed without an answer (issue 11 item 6).
HEADER_LIMIT = 64 * 1024
MAX_HEADER_SIZE = 1024 * 1024


def too_large_body(limit: int) -> bytes:
    return json.dumps({"error": "headers_too_large",
                       "message": f"request headers exceed {limit} bytes"}).encode()


class HeaderLimitStream(IOStream):
    """Tornado closes a connection whose headers overflow the server's limit without a
    word; this stream answers 431 first. The answer is small, so it is written straight
    to the socket (it fits its send buffer); what the client still sends is read and
    dropped for a moment so that the close does not reset the connection before the
    client read the answer."""

    answered = False

    def _check_max_bytes(self, delimiter: Any, size: int) -> None:
        limit = self._read_max_bytes
        if limit is not None and size > limit and not self.answered:
            self.answered = True
            body = too_large_body(limit)
            answer = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            try:
                self.socket.send(answer)
                self.socket.shutdown(socket.SHUT_WR)
                drain_then_close(self.socket.dup())
            except OSError:
                pass
        super()._check_max_bytes(delimiter, size)


def drain_then_close(sock: socket.socket, seconds: float = 2.0) -> None:
    """Read and drop what the client still sends (at most ``seconds``, 4 MiB), then
    close: a close with unread data would reset the connection and could lose the 431."""
    import threading

    def drain() -> None:
        try:
            sock.settimeout(seconds)
            left = 4 * 1024 * 1024
            while left > 0 and (chunk := sock.recv(65536)):
                left -= len(chunk)
        except OSError:
            pass
        finally:
            sock.close()

    threading.Thread(target=drain, daemon=True, name="header-431").start()


class GatewayHTTPServer(HTTPServer):
    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        if type(stream) is IOStream:
            stream.__class__ = HeaderLimitStream
        super().handle_stream(stream, address)


def http_server(app: tornado.web.Application, **kwargs: Any) -> HTTPServer:
    """The HTTP server of every process of ours: headers up to ``MAX_HEADER_SIZE``
    (``GatewayApplication`` answers 431 past ``HEADER_LIMIT`` but for tus), 431 past it."""
    return GatewayHTTPServer(app, max_header_size=MAX_HEADER_SIZE, **kwargs)


class HeadersTooLarge(api.NotFoundHandler):
    def prepare(self) -> None:
        self.set_status(431)
        self.set_header("Content-Type", "application/json")
        self.finish(too_large_body(HEADER_LIMIT))


class GatewayApplication(tornado.web.Application):
    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        size = sum(len(k) + len(v) + 4 for k, v in request.headers.get_all())
        if size > HEADER_LIMIT and "/tus" not in request.path:
            return self.get_handler_delegate(request, HeadersTooLarge,
                                             {"services": self.settings["services"]})
        return super().find_handler(request, **kwargs)


def status_application(services: Services, table: list[Any]) -> tornado.web.Application:
    """The application of a process that serves only probes (and the puller's jobs API):
    the same header limits, 404 body and authentication as the gateway's."""
    return GatewayApplication(
        table, default_handler_class=api.NotFoundHandler,
        default_handler_args={"services": services}, services=services,
        auth=authenticator(services))


def authenticator(services: Services) -> Authenticator:
    """The application's ``settings["auth"]`` (auth/): API keys and staff sessions from
    the database, ``AUTH_REQUIRED`` from the environment."""
    settings = services.settings
    return build_authenticator(services.database.engine, settings.env, settings.workdir)


def make_app(services: Services, extra_routes: list[Any] | None = None) -> tornado.web.Application:
    return GatewayApplication(
        routes(services) + list(extra_routes or []),
        default_handler_class=api.NotFoundHandler,
        default_handler_args={"services": services},
        log_function=_log_request,
        services=services,
        auth=authenticator(services),
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    import logging

    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if handler.request.path == "/metrics" or status < 400 and handler.request.method == "GET":
        level = logging.DEBUG
    logging.getLogger("upload.access").log(
        level, "%d %s %s request_id=%s %.1fms", status, handler.request.method,
        handler.request.uri, getattr(handler, "request_id", "-"),
        1000.0 * handler.request.request_time())
