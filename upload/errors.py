"""Stable error codes and their HTTP statuses; handlers raise ``ApiError`` and one
``write_error`` renders ``{"error": code, "message": text}``."""
from __future__ import annotations

from tornado.web import HTTPError

STATUS = {
    "bad_request": 400,
    "malformed_multipart": 400,
    "missing_file": 400,
    "malformed_identity": 400,
    "malformed_metadata": 400,
    "malformed_content_type": 400,
    "bad_name": 400,
    "invalid_part": 400,
    "size_mismatch": 400,
    "unknown_validator": 400,
    "identity_required": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "duplicate_request_id": 409,
    "already_associated": 409,
    "not_associable": 409,
    "already_decided": 409,
    "job_running": 409,
    "area_locked": 409,
    "area_deleting": 409,
    "area_submitted": 409,
    "not_checksummed": 409,
    "not_validated": 409,
    "no_such_upload": 404,
    "length_required": 411,
    "upload_too_large": 413,
    "verdict_too_large": 413,
    "unsupported_service": 415,
    "unsupported_media_type": 415,
    "storage_unavailable": 503,
    "service_unavailable": 503,
    "internal_error": 500,
}

# Tornado raises plain HTTPErrors of its own (e.g. 405, 404); they map to these codes.
BY_STATUS = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
             413: "upload_too_large", 503: "service_unavailable"}


class ApiError(HTTPError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(STATUS[code], reason=None)
        self.code = code
        self.message = message
