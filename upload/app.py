"""The Tornado application: every API route under /api/v1/ and /api/ingress/v1/."""
from __future__ import annotations

import json
from typing import Any

import tornado.web

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


# Tornado reads request headers up to app.MAX_HEADER_SIZE (1 MiB) so that a tus
# concatenation naming thousands of partial uploads gets a clear 400; every other request
# keeps Tornado's usual 64 KiB and gets 431 past it.
HEADER_LIMIT = 64 * 1024


class HeadersTooLarge(api.NotFoundHandler):
    def prepare(self) -> None:
        self.set_status(431)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": "headers_too_large",
                                "message": f"request headers exceed {HEADER_LIMIT} bytes"}))


class GatewayApplication(tornado.web.Application):
    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        size = sum(len(k) + len(v) + 4 for k, v in request.headers.get_all())
        if size > HEADER_LIMIT and "/tus" not in request.path:
            return self.get_handler_delegate(request, HeadersTooLarge,
                                             {"services": self.settings["services"]})
        return super().find_handler(request, **kwargs)


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
