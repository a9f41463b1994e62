"""Archive integrity: the built-in ``archive`` check for ``+tgz``/``+tar``/``+zip`` payloads.

The archive is listed, never extracted. The format comes from the content type's suffix
(``+tgz``, ``+tar.gz``, ``+tar``, ``+zip``) or, without one, from the leading bytes (gzip,
bzip2, xz or a tar header → tar; ``PK`` → zip). Tar is read as a stream (``tarfile``
``r|*``), so a truncated or corrupt archive fails when its end is reached.

It fails (``reason`` names the first offending member) on:
- an absolute name (``/x``, ``C:\\x``), or a ``..`` component (``\\`` counts as a separator);
- a symbolic link whose target is absolute or leaves the archive's root from where the
  link sits; a hard link to a name outside the root or to no earlier member;
- device files and FIFOs (tar), or entries whose mode says so (zip);
- more than ``max_members`` members (10 000);
- more than ``max_bytes`` bytes in all once uncompressed (4 GiB, from the headers, so a
  bomb is refused before it is inflated), or a ratio of uncompressed to payload size
  above ``max_ratio`` (200) once the total is past ``ratio_floor`` (1 MiB);
- a tar member with less data than its header says (a truncated archive), zip entries
  whose data overlap (the overlapping-file zip bomb), and anything the
  ``tarfile``/``zipfile`` modules cannot read.
"""
from __future__ import annotations

import ntpath
import os
import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from validators.loop import Verdict

TAR_SUFFIXES = ("tgz", "tar.gz", "tar", "tar.bz2", "tar.xz")
ZIP_SUFFIXES = ("zip",)
_MAGIC = ((b"\x1f\x8b", "tar"), (b"BZh", "tar"), (b"\xfd7zXZ\x00", "tar"), (b"PK\x03\x04", "zip"),
          (b"PK\x05\x06", "zip"))


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000
    max_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0
    ratio_floor: int = 1024 * 1024


class Refused(Exception):
    """The archive breaks a rule; the message is the verdict's reason."""


def suffix(content_type: str | None) -> str | None:
    """``application/vnd.redhat.advisor.x+tgz`` → ``tgz``; None without a ``+``."""
    if not content_type or "+" not in content_type:
        return None
    return content_type.split(";", 1)[0].rsplit("+", 1)[1].strip().lower() or None


def archive_format(content_type: str | None, head: bytes) -> str | None:
    claimed = suffix(content_type)
    if claimed in TAR_SUFFIXES:
        return "tar"
    if claimed in ZIP_SUFFIXES:
        return "zip"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if head[257:262] == b"ustar" else None


def check_archive(payload: BinaryIO, size: int, content_type: str | None = None,
                  limits: ArchiveLimits = ArchiveLimits()) -> Verdict:
    head = payload.read(512)
    payload.seek(0)
    kind = archive_format(content_type, head)
    if kind is None:
        return Verdict("failure", "not a tar or zip archive")
    try:
        members, total = (_check_tar if kind == "tar" else _check_zip)(payload, size, limits)
    except Refused as exc:
        return Verdict("failure", str(exc))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        return Verdict("failure", f"unreadable {kind} archive: {exc}")
    return Verdict("success", None, {"archive": {"format": kind, "members": members,
                                                 "uncompressed_bytes": total}})


def make_check(limits: ArchiveLimits = ArchiveLimits()) -> Any:
    def archive(announcement: dict[str, Any], payload: BinaryIO) -> Verdict:
        size = payload.seek(0, os.SEEK_END)  # a file in memory as well as on disk
        payload.seek(0)
        return check_archive(payload, size, announcement.get("content_type"), limits)
    return archive


# rules ---------------------------------------------------------------------------------

def _check_name(name: str) -> str:
    """The member name with ``\\`` as ``/``, or ``Refused`` when it leaves the root."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or ntpath.splitdrive(name)[0]:
        raise Refused(f"member {name!r} has an absolute path")
    if ".." in unified.split("/"):
        raise Refused(f"member {name!r} has a '..' component")
    return unified


def _inside(path: str) -> bool:
    normal = posixpath.normpath(path)
    return normal != ".." and not normal.startswith("../") and not normal.startswith("/")


def _check_symlink(name: str, target: str) -> None:
    unified = target.replace("\\", "/")
    if unified.startswith("/") or ntpath.splitdrive(target)[0]:
        raise Refused(f"symlink {name!r} points to the absolute path {target!r}")
    if not _inside(posixpath.join(posixpath.dirname(name), unified)):
        raise Refused(f"symlink {name!r} points outside the archive ({target!r})")


class _Totals:
    def __init__(self, size: int, limits: ArchiveLimits) -> None:
        self.size = max(size, 1)
        self.limits = limits
        self.members = 0
        self.bytes = 0

    def add(self, name: str, member_bytes: int) -> None:
        self.members += 1
        self.bytes += max(member_bytes, 0)
        limits = self.limits
        if self.members > limits.max_members:
            raise Refused(f"more than {limits.max_members} members")
        if self.bytes > limits.max_bytes:
            raise Refused(f"more than {limits.max_bytes} bytes uncompressed (at {name!r})")
        if self.bytes > limits.ratio_floor and self.bytes / self.size > limits.max_ratio:
            raise Refused(f"compression ratio above {limits.max_ratio:g} (at {name!r}): "
                          "a decompression bomb")


def _check_tar(payload: BinaryIO, size: int, limits: ArchiveLimits) -> tuple[int, int]:
    totals = _Totals(size, limits)
    seen: set[str] = set()
    with tarfile.open(fileobj=payload, mode="r|*") as archive:
        for member in archive:
            name = _check_name(member.name)
            if member.issym():
                _check_symlink(member.name, member.linkname)
            elif member.islnk():
                target = _check_name(member.linkname)
                if posixpath.normpath(target) not in seen:
                    raise Refused(f"hard link {member.name!r} points to {member.linkname!r}, "
                                  "which is not an earlier member")
            elif member.ischr() or member.isblk() or member.isfifo():
                raise Refused(f"member {member.name!r} is a device file or FIFO")
            seen.add(posixpath.normpath(name))
            totals.add(member.name, member.size)
            if member.isreg():
                _read_all(archive, member)
    return totals.members, totals.bytes


def _read_all(archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """Read a member's data (the stream skips it anyway) to notice a truncated archive."""
    data = archive.extractfile(member)
    read = 0
    while data is not None and (block := data.read(1024 * 1024)):
        read += len(block)
    if read != member.size:
        raise Refused(f"truncated archive: member {member.name!r} has {read} of "
                      f"{member.size} bytes")


def _check_zip(payload: BinaryIO, size: int, limits: ArchiveLimits) -> tuple[int, int]:
    totals = _Totals(size, limits)
    with zipfile.ZipFile(payload) as archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise Refused(f"more than {limits.max_members} members")
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                if info.file_size > 4096:
                    raise Refused(f"symlink {info.filename!r} has an oversized target")
                target = archive.read(info).decode("utf-8", "replace")
                _check_symlink(info.filename, target)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                raise Refused(f"member {info.filename!r} is a device file or FIFO")
            totals.add(info.filename, info.file_size)
        _check_overlap(infos)
    return totals.members, totals.bytes


def _check_overlap(infos: list[zipfile.ZipInfo]) -> None:
    """Each entry's data must end before the next entry's local header begins."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for current, following in zip(ordered, ordered[1:]):
        encoding = "utf-8" if current.flag_bits & 0x800 else "cp437"
        header = 30 + len(current.filename.encode(encoding, "replace"))
        if current.header_offset + header + current.compress_size > following.header_offset:
            raise Refused(f"members {current.filename!r} and {following.filename!r} overlap: "
                          "a zip bomb")


def from_settings(settings: Any) -> Any:
    """The registry's factory (validators.CHECKS); the defaults need no settings."""
    return make_check()
