"""Content check: the built-in ``mime`` check, that the MIME type sniffed from the payload
(libmagic, first 64 KiB) is one the content type's ``+suffix`` allows.

| suffix | sniffed type must be |
| --- | --- |
| `tgz`, `tar.gz` | `application/gzip` (or `x-gzip`), and the decompressed start `application/x-tar` |
| `gz`, `gzip` | `application/gzip`, `application/x-gzip` |
| `tar` | `application/x-tar` |
| `zip` | `application/zip` |
| `bz2` | `application/x-bzip2` |
| `xz` | `application/x-xz` |
| `json` | `application/json`, `text/plain` |
| `xml` | `text/xml`, `application/xml` |
| `csv` | `text/csv`, `text/plain` |
| `txt`, `text`, `log` | `text/plain` |
| `obj` | `text/plain` |
| `pdf` | `application/pdf` |

A content type without a ``+suffix`` claims nothing and passes. A suffix not in the table
fails (``no MIME rule for +foo``): the check cannot vouch for what it does not know, so
a service using other suffixes should not be given this check. An empty payload is
sniffed ``application/x-empty`` and fails every rule.
"""
from __future__ import annotations

import zlib
from typing import Any, BinaryIO

from core.mime import sniff
from validators.archive import suffix
from validators.loop import Verdict

SNIFF_BYTES = 64 * 1024
GZIP = ("application/gzip", "application/x-gzip")
ALLOWED: dict[str, tuple[str, ...]] = {
    "tgz": GZIP,
    "tar.gz": GZIP,
    "gz": GZIP,
    "gzip": GZIP,
    "tar": ("application/x-tar",),
    "zip": ("application/zip",),
    "bz2": ("application/x-bzip2",),
    "xz": ("application/x-xz",),
    "json": ("application/json", "text/plain"),
    "xml": ("text/xml", "application/xml"),
    "csv": ("text/csv", "text/plain"),
    "txt": ("text/plain",),
    "text": ("text/plain",),
    "log": ("text/plain",),
    "obj": ("text/plain",),
    "pdf": ("application/pdf",),
}
INNER_TAR = ("tgz", "tar.gz")


def _gunzip_head(head: bytes) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(head, SNIFF_BYTES)
    except zlib.error:
        return b""


def check_mime(content_type: str | None, head: bytes) -> Verdict:
    claimed = suffix(content_type)
    if claimed is None:
        return Verdict("success")
    allowed = ALLOWED.get(claimed)
    if allowed is None:
        return Verdict("failure", f"no MIME rule for +{claimed}")
    sniffed = sniff(head)
    if sniffed not in allowed:
        return Verdict("failure", f"content type claims +{claimed} but the content is {sniffed}")
    if claimed in INNER_TAR:
        inner = sniff(_gunzip_head(head))
        if inner != "application/x-tar":
            return Verdict("failure", f"content type claims +{claimed} but the gzip holds {inner}")
    return Verdict("success", None, {"mime": sniffed})


def make_check() -> Any:
    def mime(announcement: dict[str, Any], payload: BinaryIO) -> Verdict:
        return check_mime(announcement.get("content_type"), payload.read(SNIFF_BYTES))
    return mime


def from_settings(settings: Any) -> Any:
    """The registry's factory (validators.CHECKS); the defaults need no settings."""
    return make_check()
