"""The tus endpoints in /api/v1/openapi.json (the protocol itself: tus.io, 1.0.0)."""
from __future__ import annotations

from typing import Any

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _header(name: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": {"type": "string"}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", **_ERROR} for code in codes}


_UPLOAD = {"name": "upload_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
PATHS: dict[str, Any] = {
    "/api/v1/tus/": {
        "options": {"summary": "tus server capabilities (Tus-Version, Tus-Extension, "
                               "Tus-Max-Size, Tus-Checksum-Algorithm); CORS preflight",
                    "responses": {"204": {"description": "capabilities in headers"}}},
        "post": {
            "summary": "Create a resumable upload (tus creation, creation-with-upload, "
                       "creation-defer-length, concatenation)",
            "parameters": [_header("Tus-Resumable", True), _header("Upload-Length"),
                           _header("Upload-Defer-Length"), _header("Upload-Metadata"),
                           _header("Upload-Concat"), _header("x-rh-identity"),
                           _header("x-rh-insights-request-id")],
            "requestBody": {"required": False, "content": {
                "application/offset+octet-stream": {"schema": {"type": "string",
                                                               "format": "binary"}}}},
            "responses": {"201": {"description": "created: Location, Upload-Offset, "
                                                 "Upload-Expires, x-rh-insights-request-id"},
                          **_errors(400, 401, 409, 412, 413, 415, 423, 503)},
        },
    },
    "/api/v1/tus/{upload_id}": {
        "head": {"summary": "Offset, length and metadata of an upload",
                 "parameters": [_UPLOAD, _header("Tus-Resumable", True)],
                 "responses": {"200": {"description": "Upload-Offset, Upload-Length, ..."},
                               "404": {"description": "unknown"},
                               "410": {"description": "terminated or expired"}}},
        "patch": {
            "summary": "Append bytes at Upload-Offset (checksum: Upload-Checksum)",
            "parameters": [_UPLOAD, _header("Tus-Resumable", True),
                           _header("Upload-Offset", True), _header("Upload-Checksum"),
                           _header("Upload-Length")],
            "requestBody": {"required": True, "content": {
                "application/offset+octet-stream": {"schema": {"type": "string",
                                                               "format": "binary"}}}},
            "responses": {"204": {"description": "stored: the new Upload-Offset"},
                          **_errors(400, 403, 404, 409, 410, 412, 413, 415, 423, 460, 503)},
        },
        "delete": {"summary": "Terminate an unfinished upload",
                   "parameters": [_UPLOAD, _header("Tus-Resumable", True)],
                   "responses": {"204": {"description": "terminated"},
                                 **_errors(403, 404, 410, 423)}},
    },
}
