"""Base handler: dependencies through ``initialize``, JSON bodies, one ``write_error``."""
from __future__ import annotations

import json
from typing import Any

import tornado.web

from core.services import Services
from upload.errors import BY_STATUS, ApiError
from upload.identity import Identity, parse_identity

__all__ = ["ApiHandler", "Services"]


class ApiHandler(tornado.web.RequestHandler):
    def initialize(self, services: Services) -> None:
        self.services = services

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_json(self, body: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
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
