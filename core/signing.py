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
