"""The OpenAPI description served at /api/v1/openapi.json."""
from __future__ import annotations

from typing import Any

from areas.openapi import PATHS as AREA_PATHS
from auth.openapi import PATHS as AUTH_PATHS
from consumer.openapi import PATHS as BUNDLER_PATHS
from pull.openapi import PATHS as PULL_PATHS
from tus.openapi import PATHS as TUS_PATHS

VERSION = "1.0.0"

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
            for code in codes}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_STATUSES = ["created", "receiving", "received", "stored", "announced", "handed_off",
             "validated", "rejected", "available", "terminated", "expired"]


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Upload gateway", "version": VERSION},
    "paths": {
        "/api/v1/upload": {
            "post": {
                "summary": "Upload a payload into quarantine for its service's validator",
                "parameters": [
                    {"name": "x-rh-identity", "in": "header", "schema": {"type": "string"}},
                    {"name": "x-rh-insights-request-id", "in": "header",
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
                    {"name": "X-Request-ID", "in": "header",
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
                    {"name": "traceparent", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"},
                                   "upload": {"type": "string", "format": "binary"},
                                   "metadata": {"type": "string"},
                                   "test": {"type": "string", "description":
                                            "test: a connection test, answered 200, nothing "
                                            "stored"}},
                }}}},
                "responses": {
                    "202": _json("Accepted", "durably stored and announcement recorded"),
                    "200": _json("Accepted", "a connection test (test=test): nothing stored"),
                    **_errors(400, 401, 405, 409, 413, 415, 431, 503),
                },
            }
        },
        "/api/v1/uploads/{request_id}": {
            "get": {
                "summary": "Status and timeline of an upload",
                "parameters": [{"name": "request_id", "in": "path", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "x-rh-identity", "in": "header",
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("Status", "status and timeline"),
                              **_errors(400, 401, 403, 404, 503)},
            }
        },
        "/api/v1/callbacks/{request_id}": {
            "post": {
                "summary": "Record a verdict through the one-time callback_url of an announcement",
                "parameters": [
                    {"name": "request_id", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "code", "in": "query", "required": True,
                     "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["validation"],
                    "properties": {"validation": {"type": "string",
                                                  "enum": ["success", "failure", "handoff"]},
                                   "reason": {"type": "string"}},
                }}}},
                "responses": {"200": {"description": "verdict recorded"},
                              **_errors(400, 403, 404, 409, 413, 415, 503)},
            }
        },
        "/api/v1/download/{bucket}/{key}": {
            "get": {
                "summary": "An object through its signed, expiring URL (localdisk storage); "
                           "Content-Disposition names its file when the URL does",
                "parameters": [
                    {"name": "bucket", "in": "path", "required": True,
                     "schema": {"type": "string", "enum": ["quarantine", "perm", "reject"]}},
                    {"name": "key", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "expires", "in": "query", "required": True,
                     "schema": {"type": "integer"}},
                    {"name": "signature", "in": "query", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "filename", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "the object's bytes", "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}},
                              **_errors(403, 404, 503)},
            }
        },
        "/api/v1/version": {"get": {"responses": {"200": _json("Version", "version")}}},
        "/api/v1/health": {"get": {"responses": {
            "200": _json("Health", "healthy"),
            "503": _json("Health", "a component is down (named in down)")}}},
        "/api/v1/openapi.json": {"get": {"responses": {"200": {
            "description": "this document",
            "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/livez": {"get": {"summary": "The process answers", "responses": {
            "200": _json("Live", "alive")}}},
        "/readyz": {"get": {"summary": "Ready for traffic: storage and database up",
                            "responses": {"200": _json("Ready", "ready"),
                                          "503": _json("Ready", "not ready")}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics",
                                                   "content": {"text/plain": {"schema": {
                                                       "type": "string"}}}}}}},
        "/upload/": {"get": {"summary": "The browser upload page (Uppy over tus)",
                             "responses": {"200": {"description": "the page", "content": {
                                 "text/html": {"schema": {"type": "string"}}}}}}},
        "/upload/config.json": {"get": {"summary": "The upload page's settings (services, "
                                                   "tus endpoint, chunk size)",
                                        "responses": {"200": {"description": "settings",
                                                              "content": {"application/json": {
                                                                  "schema": {"type": "object"}}}}}}},
        "/staff/": {"get": {"summary": "The staff page (HTML and a small script) over the "
                                       "asset-transfer API; for signed-in staff", "responses": {
                                           "200": {"description": "the page", "content": {
                                               "text/html": {"schema": {"type": "string"}}}},
                                           "302": {"description": "not signed in: to "
                                                                  "/auth/login"}}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "message"],
                  "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
        "Version": {"type": "object", "required": ["version"],
                    "properties": {"version": {"type": "string"}}},
        "Health": {"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "down": {"type": "array", "items": {"type": "string"},
                     "description": "the components that are down"},
            "components": {"type": "object",
                           "additionalProperties": {"type": "string", "enum": ["ok", "down"]}},
            "details": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "why each component is down: scope admin only"},
            "without_validator": {"type": "array", "items": {"type": "string"}}}},
        "Live": {"type": "object", "required": ["status"],
                 "properties": {"status": {"type": "string", "enum": ["alive"]}}},
        "Ready": {"type": "object", "required": ["status", "down"], "properties": {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "down": {"type": "array", "items": {"type": "string"}}}},
        "Status": {"type": "object", "required": ["request_id", "service", "status",
                                                  "timeline"], "properties": {
            "request_id": {"type": "string"},
            "service": {"type": "string"},
            "status": {"type": "string", "enum": _STATUSES},
            "reason": {"type": "string", "nullable": True},
            "size": {"type": "integer", "minimum": 0},
            "checksums": {"type": "object", "properties": {"sha256": {"type": "string"}}},
            "timeline": {"type": "array", "items": {
                "type": "object", "required": ["status", "at"], "properties": {
                    "status": {"type": "string", "enum": [*_STATUSES, "waiting"]},
                    "message": {"type": "string", "nullable": True},
                    "at": {"type": "string", "format": "date-time"}}}}}},
        "Accepted": {"type": "object", "properties": {
            "request_id": {"type": "string"},
            "upload": {"type": "object", "properties": {
                "account_number": {"type": "string", "nullable": True},
                "org_id": {"type": "string", "nullable": True}}}}},
    }},
}
SPEC["paths"].update(BUNDLER_PATHS)
SPEC["paths"].update(TUS_PATHS)
SPEC["paths"].update(PULL_PATHS)
SPEC["paths"].update(AUTH_PATHS)
SPEC["paths"].update(AREA_PATHS)
SPEC["components"]["securitySchemes"] = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "an API key (python app.py keys add NAME --scope ...)"},
    "staffSession": {"type": "apiKey", "in": "cookie", "name": "gw_session",
                     "description": "a signed-in staff user (/auth/login); requests that change "
                                    "state also send X-CSRF-Token (from /auth/session)"}}
