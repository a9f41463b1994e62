"""Base handler: dependencies through ``initialize``, JSON bodies, one ``write_error``."""
from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

import tornado.web
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bus import BusUnavailable
from core.services import Services
from storage import StorageUnavailable
from upload.errors import BY_STATUS, ApiError
from upload.identity import Identity, parse_identity

__all__ = ["ApiHandler", "Services"]

logger = logging.getLogger(__name__)

# A backend that cannot answer now: the client should retry (503); it is no bug (500).
BACKEND_DOWN = (OperationalError, InterfaceError, PoolTimeout, BusUnavailable)


def unavailable(error: BaseException | None) -> ApiError | None:
    """The 503 that an uncaught outage of the database, bus or storage stands for."""
    if isinstance(error, StorageUnavailable):
        return ApiError("storage_unavailable", "storage is unavailable; retry later")
    if isinstance(error, BACKEND_DOWN):
        return ApiError("service_unavailable", "a backend is unavailable; retry later")
    return None


class ApiHandler(tornado.web.RequestHandler):
    def initialize(self, services: Services) -> None:
        self.services = services

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_json(self, body: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str))

    def log_exception(self, typ: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        if unavailable(value) is not None:
            logger.warning("request_id=%s %s %s: backend unavailable (%s: %s)",
                           getattr(self, "request_id", "-"), self.request.method,
                           self.request.path, type(value).__name__, str(value).strip()[:300])
            return
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """An uncaught database, bus or storage outage is a 503, not a 500."""
        mapped = unavailable(kwargs.get("exc_info", (None, None, None))[1])
        if status_code == 500 and mapped is not None:
            kwargs["exc_info"] = (ApiError, mapped, None)
            status_code = mapped.status_code
        super().send_error(status_code, **kwargs)

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements (the ``Allow`` of a 405)."""
        base = tornado.web.RequestHandler
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)]

    def check_method(self) -> None:
        """405 before anything else for a method this handler does not implement (a
        ``prepare`` that reads the request would otherwise answer for it)."""
        if self.request.method not in self.allowed_methods():
            raise ApiError("method_not_allowed", f"{self.request.method} is not allowed here; "
                           f"use {', '.join(self.allowed_methods())}")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            code, message = error.code, error.message
        else:
            code = BY_STATUS.get(status_code, "internal_error")
            message = self._reason if status_code < 500 else "internal error"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": code, "message": message}))

    def request_identity(self) -> Identity | None:
        return parse_identity(self.request.headers.get("x-rh-identity"))
