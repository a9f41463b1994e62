"""The MIME content check: the sniffed type must be one the content type's suffix allows."""
from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import pytest

from validators.mimecheck import ALLOWED, check_mime


def _tgz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    return out.getvalue()


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", "hi")
    return out.getvalue()


CT = "application/vnd.redhat.advisor.thing"


@pytest.mark.parametrize("suffix, content, ok", [
    ("+tgz", _tgz(), True),
    ("+tar.gz", _tgz(), True),
    ("+tgz", _zip(), False),
    ("+tgz", gzip.compress(b"just text, not a tar"), False),
    ("+gz", gzip.compress(b"just text"), True),
    ("+zip", _zip(), True),
    ("+zip", _tgz(), False),
    ("+json", b'{"a": 1}', True),
    ("+json", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, False),
    ("+csv", b"a,b\n1,2\n", True),
    ("+obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", True),
    ("+tgz", b"", False),
    ("", b"anything at all", True),
    ("+weird", b"anything", False),
])
def test_table(suffix: str, content: bytes, ok: bool) -> None:
    verdict = check_mime(CT + suffix, content)
    assert (verdict.validation == "success") is ok, verdict.reason


def test_reasons() -> None:
    assert check_mime(CT + "+zip", _tgz()).reason == \
        "content type claims +zip but the content is application/gzip"
    assert check_mime(CT + "+weird", b"x").reason == "no MIME rule for +weird"
    assert "gzip holds text/plain" in (check_mime(CT + "+tgz", gzip.compress(b"text")).reason or "")
    assert check_mime(CT + "+tgz", _tgz()).extra == {"mime": "application/gzip"}
    assert "tgz" in ALLOWED and "zip" in ALLOWED
