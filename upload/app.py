"""The Tornado application: every API route under /api/v1/ and /api/ingress/v1/."""
from __future__ import annotations

from typing import Any

import tornado.web

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
    ]
    table += bundler_api.routes(services, PREFIXES)
    return table


def make_app(services: Services, extra_routes: list[Any] | None = None) -> tornado.web.Application:
    return tornado.web.Application(
        routes(services) + list(extra_routes or []),
        default_handler_class=api.NotFoundHandler,
        default_handler_args={"services": services},
        log_function=_log_request,
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
