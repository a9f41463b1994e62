"""Archive integrity on real tar and zip files built here: clean ones pass; traversal,
absolute names, links outside, devices, too many members and bombs fail."""
from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from typing import Callable

import pytest

from validators.archive import ArchiveLimits, check_archive

TGZ = "application/vnd.redhat.advisor.x+tgz"
ZIP = "application/vnd.redhat.advisor.x+zip"


def tgz(*members: tarfile.TarInfo | tuple[str, bytes], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return out.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def zipped(*members: tuple[str, bytes] | tuple[str, bytes, int]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            info = zipfile.ZipInfo(member[0])
            info.compress_type = zipfile.ZIP_DEFLATED
            if len(member) == 3:
                info.external_attr = member[2] << 16  # type: ignore[misc]
            archive.writestr(info, member[1])
    return out.getvalue()


def check(data: bytes, content_type: str | None = TGZ, limits: ArchiveLimits = ArchiveLimits()):  # type: ignore[no-untyped-def]
    return check_archive(io.BytesIO(data), len(data), content_type, limits)


def test_clean_archives_pass() -> None:
    verdict = check(tgz(("dir/a.txt", b"a"), link("dir/l", "a.txt"), link("top", "dir/a.txt"),
                        link("hard", "dir/a.txt", tarfile.LNKTYPE)))
    assert verdict.validation == "success", verdict.reason
    assert verdict.extra == {"archive": {"format": "tar", "members": 4, "uncompressed_bytes": 1}}
    assert check(tgz(("a", b"x"), mode="w"), "application/vnd.redhat.advisor.x+tar").validation == "success"
    assert check(tgz(("a", b"x")), None).validation == "success"  # sniffed: gzip → tar
    linked = zipped(("a/b.txt", b"hi"), ("a/l", b"b.txt", stat.S_IFLNK | 0o777))
    assert check(linked, ZIP).validation == "success"
    assert check(zipped(("c.txt", b"hi")), None).extra["archive"]["format"] == "zip"  # type: ignore[index]


@pytest.mark.parametrize("build, words", [
    (lambda: tgz(("../evil", b"x")), "'..' component"),
    (lambda: tgz(("a/../../evil", b"x")), "'..' component"),
    (lambda: tgz(("/etc/passwd", b"x")), "absolute path"),
    (lambda: tgz(("a\\..\\..\\evil", b"x")), "'..' component"),
    (lambda: tgz(link("l", "../../etc/passwd")), "points outside"),
    (lambda: tgz(link("a/b/l", "../../../x")), "points outside"),
    (lambda: tgz(link("l", "/etc/passwd")), "absolute path"),
    (lambda: tgz(link("h", "../outside", tarfile.LNKTYPE)), "'..' component"),
    (lambda: tgz(link("h", "not-there", tarfile.LNKTYPE)), "not an earlier member"),
    (lambda: tgz(link("dev", "", tarfile.CHRTYPE)), "device file"),
    (lambda: tgz(link("fifo", "", tarfile.FIFOTYPE)), "device file or FIFO"),
])
def test_tar_rules(build: Callable[[], bytes], words: str) -> None:
    verdict = check(build())
    assert verdict.validation == "failure" and words in (verdict.reason or ""), verdict.reason


@pytest.mark.parametrize("build, words", [
    (lambda: zipped(("../evil", b"x")), "'..' component"),
    (lambda: zipped(("/abs", b"x")), "absolute path"),
    (lambda: zipped(("C:\\windows\\x", b"x")), "absolute path"),
    (lambda: zipped(("l", b"../../etc/passwd", stat.S_IFLNK | 0o777)), "points outside"),
    (lambda: zipped(("dev", b"", stat.S_IFCHR | 0o600)), "device file"),
])
def test_zip_rules(build: Callable[[], bytes], words: str) -> None:
    verdict = check(build(), ZIP)
    assert verdict.validation == "failure" and words in (verdict.reason or ""), verdict.reason


def test_bombs_and_limits() -> None:
    zeros = b"\0" * (20 * 1024 * 1024)
    bomb = tgz(("zeros", zeros))
    assert len(bomb) < 100_000
    assert "decompression bomb" in (check(bomb).reason or "")
    assert "decompression bomb" in (check(zipped(("zeros", zeros)), ZIP).reason or "")
    small = ArchiveLimits(max_members=3, max_bytes=10)
    many = tgz(*((f"f{n}", b"") for n in range(5)))
    assert "more than 3 members" in (check(many, limits=small).reason or "")
    assert "more than 3 members" in (check(zipped(*((f"f{n}", b"") for n in range(5))), ZIP,
                                           small).reason or "")
    assert "more than 10 bytes" in (check(tgz(("big", b"x" * 11)), limits=small).reason or "")


def test_overlapping_zip_entries() -> None:
    data = bytearray(zipped(("a", b"same data" * 100), ("b", b"other" * 100)))
    central = data.find(b"PK\x01\x02")
    second = data.find(b"PK\x01\x02", central + 4)
    data[second + 42:second + 46] = data[central + 42:central + 46]  # b's header → a's
    verdict = check(bytes(data), ZIP)
    assert verdict.validation == "failure" and "overlap" in (verdict.reason or "")


def test_not_an_archive_or_corrupt() -> None:
    assert check(b"plain text", None).reason == "not a tar or zip archive"
    truncated = tgz(("a", os.urandom(100_000)))[:5000]
    reason = check(truncated).reason or ""
    assert "unexpected end of data" in reason or "truncated archive" in reason
    assert "unreadable zip archive" in (check(b"PK\x03\x04garbage", ZIP).reason or "")
