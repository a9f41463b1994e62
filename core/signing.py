"""HMAC-signed, expiring download URLs for objects the gateway serves itself (localdisk).

The signature covers the bucket, the key, the expiry and the file name the download is
served as (``Content-Disposition``, when the URL names one), so a URL cannot be
re-targeted at another object, extended or renamed; it is checked in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

DOWNLOAD_PREFIX = "/api/v1/download"


def _signature(secret: bytes, bucket: str, key: str, expires: int, filename: str = "") -> str:
    message = f"{bucket}\n{key}\n{expires}".encode()
    if filename:
        message += b"\n" + filename.encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_download_url(
    base_url: str, secret: bytes, bucket: str, key: str, expires_in: int, now: float | None = None,
    filename: str | None = None,
) -> str:
    expires = int((time.time() if now is None else now) + expires_in)
    fields: dict[str, str | int] = {"expires": expires}
    if filename:
        fields["filename"] = filename
    fields["signature"] = _signature(secret, bucket, key, expires, filename or "")
    query = urlencode(fields)
    return f"{base_url}{DOWNLOAD_PREFIX}/{quote(bucket)}/{quote(key)}?{query}"


def verify_download(
    secret: bytes, bucket: str, key: str, expires: str, signature: str, now: float | None = None,
    filename: str = "",
) -> bool:
    """True when ``signature`` is valid for this object and has not expired."""
    try:
        expires_at = int(expires)
    except (TypeError, ValueError):
        return False
    if expires_at < (time.time() if now is None else now):
        return False
    expected = _signature(secret, bucket, key, expires_at, filename)
    return hmac.compare_digest(expected, signature or "")


# Direct-upload parts served by the gateway itself (localdisk; storage/localdisk_direct.py):
# the signature covers the bucket, the upload, the part number, the largest body the part
# may have, and the expiry. Its message starts with its own label, so no download
# signature can pass for a part's or the other way round.
DIRECT_PREFIX = "/api/v1/direct"


def _part_signature(secret: bytes, bucket: str, upload_id: str, number: int, max_size: int,
                    expires: int) -> str:
    message = f"direct-part\n{bucket}\n{upload_id}\n{number}\n{max_size}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_part_url(base_url: str, secret: bytes, bucket: str, upload_id: str, number: int,
                  max_size: int, expires_in: int, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + expires_in)
    query = urlencode({"max": max_size, "expires": expires,
                       "signature": _part_signature(secret, bucket, upload_id, number,
                                                    max_size, expires)})
    return f"{base_url}{DIRECT_PREFIX}/{quote(bucket)}/{quote(upload_id)}/{number}?{query}"


def verify_part(secret: bytes, bucket: str, upload_id: str, number: int, max_size: str,
                expires: str, signature: str, now: float | None = None) -> int | None:
    """The part's largest size when ``signature`` is valid and not expired, else None."""
    try:
        expires_at, limit = int(expires), int(max_size)
    except (TypeError, ValueError):
        return None
    if expires_at < (time.time() if now is None else now) or limit < 0:
        return None
    expected = _part_signature(secret, bucket, upload_id, number, limit, expires_at)
    return limit if hmac.compare_digest(expected, signature or "") else None
