"""The tus 1.0.0 protocol's vocabulary: versions, extensions, headers and how to read them
strictly (a malformed header is a 400 naming it, never a 500), and the error codes with
their statuses."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "termination",
              "expiration", "checksum", "concatenation")
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_TYPE = "application/offset+octet-stream"
REQUEST_ID_HEADER = "x-rh-insights-request-id"
MAX_PARTIALS = 1000
MAX_METADATA = 16 * 1024
UPLOAD_ID = r"[0-9a-f]{32}"
UPLOAD_URL = re.compile(rf"(?:^|/)tus/({UPLOAD_ID})$")
NUMBER = re.compile(r"^[0-9]{1,19}$")
# Every header a browser client sends or reads (CORS).
REQUEST_HEADERS = ("Authorization", "Origin", "X-Requested-With", "X-Request-ID",
                   "X-HTTP-Method-Override", "Content-Type", "Upload-Length", "Upload-Offset",
                   "Tus-Resumable", "Upload-Metadata", "Upload-Defer-Length", "Upload-Concat",
                   "Upload-Checksum", "x-rh-identity", REQUEST_ID_HEADER)
RESPONSE_HEADERS = ("Upload-Offset", "Location", "Upload-Length", "Tus-Version",
                    "Tus-Resumable", "Tus-Max-Size", "Tus-Extension", "Tus-Checksum-Algorithm",
                    "Upload-Metadata", "Upload-Defer-Length", "Upload-Concat", "Upload-Expires",
                    REQUEST_ID_HEADER)

STATUS = {
    "bad_request": 400,
    "bad_header": 400,
    "bad_checksum_algorithm": 400,
    "malformed_identity": 400,
    "partial_not_complete": 400,
    "identity_required": 401,
    "final_upload": 403,
    "upload_finished": 403,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "offset_mismatch": 409,
    "duplicate_request_id": 409,
    "upload_gone": 410,
    "unsupported_version": 412,
    "upload_too_large": 413,
    "unsupported_media_type": 415,
    "unsupported_service": 415,
    "upload_locked": 423,
    "checksum_mismatch": 460,
    "storage_unavailable": 503,
    "service_unavailable": 503,
}


class TusError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS[code]


def number(headers: Any, name: str) -> int | None:
    """A non-negative integer header, or None when absent."""
    raw = headers.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if not NUMBER.match(raw):
        raise TusError("bad_header", f"{name} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional),
    unique keys without spaces or commas. Values are decoded as UTF-8 (invalid bytes
    replaced)."""
    if raw is None or not raw.strip():
        return {}
    if len(raw) > MAX_METADATA:
        raise TusError("bad_header", f"Upload-Metadata is longer than {MAX_METADATA} bytes")
    found: dict[str, str] = {}
    for pair in raw.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or not key.isprintable():
            raise TusError("bad_header", f"Upload-Metadata pair {pair.strip()[:60]!r} is not "
                           "'key base64value'")
        if key in found:
            raise TusError("bad_header", f"Upload-Metadata key {key[:60]!r} appears twice")
        try:
            value = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise TusError("bad_header",
                           f"Upload-Metadata value of {key[:60]!r} is not base64") from None
        found[key] = value.decode("utf-8", "replace")
    return found


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return CHECKSUMS[self.algorithm]()


def parse_checksum(raw: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``."""
    if raw is None:
        return None
    algorithm, _, value = raw.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise TusError("bad_checksum_algorithm", f"checksum algorithm {algorithm[:20]!r} is "
                       f"not one of {', '.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusError("bad_header", "Upload-Checksum digest is not base64") from None
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise TusError("bad_header", f"Upload-Checksum digest is not a {algorithm} digest")
    return Checksum(algorithm, digest)


def parse_concat(raw: str | None) -> tuple[str, list[str]] | None:
    """``Upload-Concat``: ``partial``, or ``final;<url> <url> ...`` → the upload ids."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "partial":
        return "partial", []
    kind, _, urls = raw.partition(";")
    if kind != "final":
        raise TusError("bad_header", "Upload-Concat must be 'partial' or 'final;<urls>'")
    ids = []
    for url in urls.split():
        match = UPLOAD_URL.search(url.split("?", 1)[0].rstrip("/"))
        if match is None:
            raise TusError("bad_header", f"Upload-Concat names {url[:80]!r}, not an upload URL "
                           "of this server")
        ids.append(match[1])
    if not ids:
        raise TusError("bad_header", "Upload-Concat final names no partial upload")
    if len(ids) > MAX_PARTIALS:
        raise TusError("bad_header", f"Upload-Concat final names {len(ids)} partial uploads; "
                       f"at most {MAX_PARTIALS}")
    if len(set(ids)) != len(ids):
        raise TusError("bad_header", "Upload-Concat final names a partial upload twice")
    return "final", ids


def http_date(value: Any) -> str:
    """RFC 7231 date (``Upload-Expires``); a naive time (SQLite's) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return format_datetime(value.astimezone(dt.UTC), usegmt=True)
