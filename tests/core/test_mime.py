"""core.mime: the pool of libmagic handles answers as python-magic's shared handle does,
from more threads than it has handles."""
from __future__ import annotations

import gzip
import io
import tarfile
import threading
import zipfile

import magic

from core import mime
from core.mime import sniff


def _heads() -> list[bytes]:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.txt", "abc")
    return [b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", b'{"a": 1}', gzip.compress(b"x" * 100),
            tar.getvalue()[:1024], zipped.getvalue(), b"\x00\x01\x02\xff" * 64]


def test_empty_head() -> None:
    assert sniff(b"") == "application/x-empty"


def test_threads_agree_with_python_magic() -> None:
    heads = _heads()
    expected = [magic.from_buffer(head, mime=True) for head in heads]
    assert "application/gzip" in expected and "text/plain" in expected
    failures: list[object] = []

    def work() -> None:
        try:
            for _ in range(50):
                got = [sniff(head) for head in heads]
                if got != expected:
                    failures.append(got)
                    return
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert 1 <= mime._created <= mime.HANDLES < len(threads)
