"""Fetching a payload through its signed URL, and telling a refusal from an outage.

A refused URL (a 4xx answer: expired, forged, gone) will never work: ``FetchRefused``,
which the loop turns into a ``failure`` verdict. Anything that may work later is a
``ConnectionError``: no connection, a reset or a body cut short, a timeout (``FETCH_TIMEOUT`` without a byte),
a 5xx answer, and the two 4xx answers that mean "not now": 408 (request timeout) and 429
(too many requests, S3's throttling). The loop retries those as long as the payload has
time left.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import urllib.error
import urllib.request
from typing import BinaryIO

FETCH_TIMEOUT = 30.0
RETRY_LATER = frozenset({408, 429})


class FetchRefused(Exception):
    """The storage answered that this URL will never work (expired, forged, gone)."""


def fetch(url: str, sink: BinaryIO) -> str:
    """Stream ``url`` into ``sink``; returns the sha256 of what was fetched. A refused
    URL is ``FetchRefused``; an outage is a ``ConnectionError`` (see the module)."""
    if not url.lower().startswith(("http://", "https://")):
        # never file:// or other schemes a forged announcement could smuggle in
        raise FetchRefused(f"payload URL scheme is not http(s): {url[:40]!r}")
    digest = hashlib.sha256()
    sink.seek(0)
    sink.truncate()  # a retry starts from nothing
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
            while block := response.read(1024 * 1024):
                digest.update(block)
                sink.write(block)
    except urllib.error.HTTPError as exc:
        if exc.code < 500 and exc.code not in RETRY_LATER:
            raise FetchRefused(f"fetching the payload was refused: HTTP {exc.code}") from None
        raise ConnectionError(f"payload fetch failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ConnectionError(f"payload fetch failed: {exc}") from None
    sink.flush()
    sink.seek(0)
    return digest.hexdigest()


def gunzip_into(source: BinaryIO, target: BinaryIO) -> str:
    """Decompress the gzip stream ``source`` (from its start) into ``target``; returns
    the sha256 of what was written."""
    digest = hashlib.sha256()
    source.seek(0)
    with gzip.GzipFile(fileobj=source, mode="rb") as reader:
        while block := reader.read(1024 * 1024):
            digest.update(block)
            target.write(block)
    return digest.hexdigest()
