"""The upload area endpoints in /api/v1/openapi.json (areas/api.py says what each does)."""
from __future__ import annotations

from typing import Any

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}
_AREA = {"name": "area_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_UPLOAD = {"name": "upload_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
# every area endpoint needs an API key with the scope areas (401, 403)
_COMMON = (400, 401, 403, 404, 405, 503)


def _answers(ok: dict[str, str], *errors: int) -> dict[str, Any]:
    answers: dict[str, Any] = {code: {"description": text, **_JSON} for code, text in ok.items()}
    answers.update({str(code): {"description": "error", **_ERROR}
                    for code in sorted({*_COMMON, *errors})})
    return answers


def _post(summary: str, ok: dict[str, str], *errors: int, body: bool = True,
          params: tuple[dict[str, Any], ...] = (_AREA,)) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "parameters": list(params),
                                 "responses": _answers(ok, *errors)}
    if body:
        operation["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": {"type": "object"}}}}
    return operation


PATHS: dict[str, Any] = {
    "/api/v1/areas/{area_id}": {
        "post": _post("Create the area (idempotent); body {max_file_size}",
                      {"201": "created", "200": "exists already"}),
        "get": _post("The area: files, checksums, states, counts, validations",
                     {"200": "the area"}, body=False),
        "delete": _post("Delete the area and its files (asynchronous)",
                        {"202": "being deleted"}, 409, body=False),
    },
    "/api/v1/areas/{area_id}/validate": {"put": {
        "summary": "Validate files as a set: {validator, files: [names, in order]}",
        "parameters": [_AREA], "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object"}}}},
        "responses": _answers({"202": "scheduled"}, 409)}},
    "/api/v1/areas/{area_id}/submit": {"post": _post(
        "Submit: promote every validated file to perm and announce it on available; "
        "{reject_invalid: true} rejects the invalid ones",
        {"202": "submitted", "200": "submitted already"}, 409)},
    "/api/v1/areas/{area_id}/status": {"get": _post(
        "The area's state and its files' counts by checksum and validation state",
        {"200": "state and counts"}, body=False)},
    "/api/v1/areas/{area_id}/lock": {"post": _post(
        "Lock the area: it accepts no files", {"200": "locked"}, 409, body=False)},
    "/api/v1/areas/{area_id}/unlock": {"post": _post(
        "Unlock the area", {"200": "open"}, 409, body=False)},
    "/api/v1/areas/{area_id}/files/{name}": {
        "put": {"summary": "Store a file through the gateway (streamed); declared checksums "
                           "in X-Checksum-SHA256 / X-Checksum-CRC32C (hex)",
                "parameters": [_AREA, _NAME,
                               {"name": "X-Checksum-SHA256", "in": "header",
                                "schema": {"type": "string"}},
                               {"name": "X-Checksum-CRC32C", "in": "header",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}},
                "responses": _answers({"201": "stored"}, 409, 413)},
        "get": _post("A file of the area", {"200": "the file"}, body=False,
                     params=(_AREA, _NAME)),
    },
    "/api/v1/areas/{area_id}/files/{name}/uploads": {"post": _post(
        "Start a direct upload: {size, sha256?, crc32c?} -> upload_id, part_size, one URL "
        "per part, complete_url", {"201": "started"}, 409, 413, params=(_AREA, _NAME))},
    "/api/v1/areas/{area_id}/files/{name}/uploads/{upload_id}/complete": {"post": _post(
        "Complete a direct upload: {parts: [{part_number, etag}]}",
        {"201": "stored", "200": "completed already"}, 409, 413, params=(_AREA, _NAME, _UPLOAD))},
    "/api/v1/areas/{area_id}/files/{name}/uploads/{upload_id}": {"delete": {
        "summary": "Abandon a direct upload", "parameters": [_AREA, _NAME, _UPLOAD],
        "responses": {"204": {"description": "abandoned"},
                      **{str(c): {"description": "error", **_ERROR} for c in _COMMON}}}},
    "/api/v1/direct/{bucket}/{upload_id}/{part}": {"put": {
        "summary": "A part of a direct upload (localdisk): the signed URL is the credential",
        "parameters": [{"name": "bucket", "in": "path", "required": True,
                        "schema": {"type": "string"}}, _UPLOAD,
                       {"name": "part", "in": "path", "required": True,
                        "schema": {"type": "integer"}},
                       *({"name": n, "in": "query", "required": True,
                          "schema": {"type": "string"}}
                         for n in ("max", "expires", "signature"))],
        "requestBody": {"required": False, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "stored; the ETag header names the part"},
                      **{str(c): {"description": "error", **_ERROR}
                         for c in (400, 403, 404, 405, 411, 413, 503)}}}},
}
