"""The OpenAPI description served at /api/v1/openapi.json."""
from __future__ import annotations

from typing import Any

from consumer.openapi import PATHS as BUNDLER_PATHS
from tus.openapi import PATHS as TUS_PATHS

VERSION = "1.0.0"

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
            for code in codes}


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
                ],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"},
                                   "upload": {"type": "string", "format": "binary"},
                                   "metadata": {"type": "string"}},
                }}}},
                "responses": {
                    "202": {"description": "durably stored and announcement recorded",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Accepted"}}}},
                    **_errors(400, 401, 409, 413, 415, 503),
                },
            }
        },
        "/api/v1/uploads/{request_id}": {
            "get": {
                "summary": "Status and timeline of an upload",
                "parameters": [{"name": "request_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "status and timeline"}, **_errors(400, 404)},
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
                              **_errors(400, 403, 404, 409, 503)},
            }
        },
        "/api/v1/version": {"get": {"responses": {"200": {"description": "version"}}}},
        "/api/v1/health": {"get": {"responses": {"200": {"description": "healthy"},
                                                 "503": {"description": "a component is down"}}}},
        "/api/v1/openapi.json": {"get": {"responses": {"200": {"description": "this document"}}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics"}}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "message"],
                  "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
        "Accepted": {"type": "object", "properties": {
            "request_id": {"type": "string"},
            "upload": {"type": "object", "properties": {
                "account_number": {"type": "string", "nullable": True},
                "org_id": {"type": "string", "nullable": True}}}}},
    }},
}
SPEC["paths"].update(BUNDLER_PATHS)
SPEC["paths"].update(TUS_PATHS)
