"""The pull jobs API in /api/v1/openapi.json (served when ``PULL_PROVIDERS`` is set; an API
key with the scope ``pulls``)."""
from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}

_AUTH = {"401": _ERROR, "403": _ERROR}
_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}]

PATHS: dict[str, Any] = {
    "/api/v1/pulls/providers": {"get": {
        "summary": "The configured providers (no secrets)",
        "security": _SECURITY,
        "responses": {"200": {"description": "providers", **_JSON}, "404": _ERROR, **_AUTH}}},
    "/api/v1/pulls/jobs": {"get": {
        "summary": "Recent jobs, newest first",
        "parameters": [{"name": "provider", "in": "query", "schema": {"type": "string"}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
        "security": _SECURITY,
        "responses": {"200": {"description": "jobs", **_JSON}, "400": _ERROR,
                      "404": _ERROR, **_AUTH}}},
    "/api/v1/pulls/jobs/{job_id}": {"get": {
        "summary": "A job: state, files, bytes, percent, items",
        "parameters": [{"name": "job_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "security": _SECURITY,
        "responses": {"200": {"description": "the job", **_JSON}, "404": _ERROR, **_AUTH}}},
    "/api/v1/pulls/{provider}": {"post": {
        "summary": "Start a job for a provider (202 with job_id and url; 409 job_running)",
        "parameters": [{"name": "provider", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}}],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"retry_failed": {"type": "boolean"}}}}}},
        "security": _SECURITY,
        "responses": {"202": {"description": "queued", **_JSON}, "400": _ERROR,
                      "404": _ERROR, "409": _ERROR, "503": _ERROR, **_AUTH}}},
}
