"""Direct uploads on local disk: the ``DirectUploads``, ``GatewayParts`` and
``PrefixListing`` capabilities of localdisk (storage/direct.py).

An open upload is the directory ``<bucket dir>/.direct/<upload id>/`` holding ``key`` (the
object key it completes to) and its parts, ``part-<nnnnn>``. A part URL is a signed URL
of the gateway (``core.signing.sign_part_url``: bucket, upload, part number, largest size,
expiry), served by areas/parts.py, which streams the body into ``open_direct_part``: a
temporary file in the upload's directory, its MD5 computed as it is written, fsynced and
renamed over the part at ``commit`` (a part sent again replaces the earlier one, as on
S3). The part's ETag is its quoted MD5, as S3's.

``complete_direct`` copies the parts, in the order given, into a new object through the
ordinary writer (temporary file, fsync, rename), checking each part's MD5 against the ETag
the client gave and S3's 5 MiB minimum for every part but the last; then it removes the
upload's directory. ``list_keys`` and ``cleanup_incomplete`` never look in ``.direct``:
an upload's owner aborts it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.signing import sign_part_url
from storage import ObjectWriter
from storage.direct import (
    MIN_PART_SIZE,
    DirectUploads,
    GatewayParts,
    PartsRefused,
    PartWriter,
    PrefixListing,
    StoredPart,
    check_part_order,
    plain_etag,
)

DIRECT_DIR = ".direct"
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
COPY_BLOCK = 1024 * 1024


def _part_name(number: int) -> str:
    return f"part-{number:05d}"


class LocalPartWriter(PartWriter):
    """Writes one part to a temporary file; ``commit`` renames it over the part."""

    def __init__(self, directory: Path, number: int, translate: Any) -> None:
        self._translate = translate
        self._dir = directory
        self._final = directory / _part_name(number)
        self._temp = directory / f".{_part_name(number)}-{secrets.token_hex(8)}"
        self._md5 = hashlib.md5()
        self._done = False
        self.size = 0
        with translate():
            self._fd: int | None = os.open(
                self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        if self._done or self._fd is None:
            raise ValueError("write to a committed or aborted part")
        self._md5.update(data)
        view = memoryview(data)
        try:
            with self._translate():
                while view:
                    view = view[os.write(self._fd, view):]
        except BaseException:
            self.abort()
            raise
        self.size += len(data)

    def commit(self) -> None:
        if self._done or self._fd is None:
            raise ValueError("commit of a committed or aborted part")
        try:
            with self._translate():
                os.fsync(self._fd)
                self._close()
                os.replace(self._temp, self._final)  # the upload ended meanwhile: ENOENT
                fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self.etag = f'"{self._md5.hexdigest()}"'

    def abort(self) -> None:
        self._done = True
        self._close()
        try:
            os.unlink(self._temp)
        except OSError:
            pass

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class LocalDiskDirect(DirectUploads, GatewayParts, PrefixListing):
    """Mixin of ``LocalDiskStorage``, whose ``_root``, ``_path`` and writer it uses."""

    _settings: Settings
    _root: Callable[[str], Path]
    _path: Callable[[str, str], Path]
    open_writer: Callable[[str, str], ObjectWriter]

    def _direct_dir(self, bucket: str, upload_id: Any) -> Path:
        if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
            raise FileNotFoundError(errno.ENOENT, "no such upload", str(upload_id))
        return self._root(bucket) / DIRECT_DIR / upload_id

    def start_direct(self, bucket: str, key: str) -> dict[str, Any]:
        from storage.localdisk import _fsync_dir, _translate

        self._path(bucket, key)  # a valid key
        upload_id = secrets.token_hex(16)
        directory = self._direct_dir(bucket, upload_id)
        with _translate():
            directory.mkdir(parents=True)
            with open(directory / "key", "w", encoding="utf-8") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            _fsync_dir(directory)
            _fsync_dir(directory.parent)
        return {"upload_id": upload_id}

    def direct_part_url(self, bucket: str, key: str, state: dict[str, Any], number: int,
                        max_size: int, expires_in: int) -> str:
        self._root(bucket)
        return sign_part_url(self._settings.public_url, self._settings.url_signing_key, bucket,
                             str(state["upload_id"]), number, max_size, expires_in)

    def open_direct_part(self, bucket: str, upload_id: str, number: int) -> PartWriter:
        from storage.localdisk import _translate

        directory = self._direct_dir(bucket, upload_id)
        if not directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such upload", upload_id)
        return LocalPartWriter(directory, number, _translate)

    def direct_parts(self, bucket: str, key: str, state: dict[str, Any]) -> list[StoredPart]:
        directory = self._direct_dir(bucket, state.get("upload_id"))
        if not directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such upload", str(directory))
        parts = []
        for path in sorted(directory.glob("part-[0-9][0-9][0-9][0-9][0-9]")):
            md5 = hashlib.md5()
            size = 0
            with open(path, "rb") as handle:
                while block := handle.read(COPY_BLOCK):
                    md5.update(block)
                    size += len(block)
            parts.append(StoredPart(int(path.name[5:]), f'"{md5.hexdigest()}"', size))
        return parts

    def complete_direct(self, bucket: str, key: str, state: dict[str, Any],
                        parts: Sequence[tuple[int, str]]) -> None:
        from storage.localdisk import _translate

        check_part_order(parts)
        directory = self._direct_dir(bucket, state.get("upload_id"))
        final = self._path(bucket, key)
        if not directory.is_dir():
            if final.is_file():
                return  # completed already (a retry)
            raise FileNotFoundError(errno.ENOENT, "no such upload", str(directory))
        paths = [directory / _part_name(number) for number, _ in parts]
        for index, (path, (number, _)) in enumerate(zip(paths, parts)):
            if not path.is_file():
                raise PartsRefused(f"part {number} was not uploaded")
            if index < len(parts) - 1 and path.stat().st_size < MIN_PART_SIZE:
                raise PartsRefused(f"part {number} is smaller than 5 MiB and not the last")
        writer = self.open_writer(bucket, key)
        try:
            for path, (number, etag) in zip(paths, parts):
                self._copy_part(path, number, etag, writer, _translate)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        with _translate():
            shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _copy_part(path: Path, number: int, etag: str, writer: ObjectWriter,
                   translate: Any) -> None:
        md5 = hashlib.md5()
        with translate(), open(path, "rb") as handle:
            while block := handle.read(COPY_BLOCK):
                md5.update(block)
                writer.write(block)
        if md5.hexdigest() != plain_etag(etag):
            raise PartsRefused(f"part {number}: ETag {etag} is not the stored part's")

    def abort_direct(self, bucket: str, key: str, state: dict[str, Any]) -> None:
        from storage.localdisk import _translate

        try:
            directory = self._direct_dir(bucket, state.get("upload_id"))
        except FileNotFoundError:
            return
        with _translate():
            shutil.rmtree(directory, ignore_errors=True)

    def list_direct(self, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, Any], float]]:
        base = self._root(bucket) / DIRECT_DIR
        if not base.is_dir():
            return
        with os.scandir(base) as entries:
            for entry in entries:
                if not UPLOAD_ID.match(entry.name):
                    continue
                try:
                    marker = Path(entry.path) / "key"
                    key = marker.read_text(encoding="utf-8")
                    started = marker.stat().st_mtime
                except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
                    continue
                if key.startswith(prefix):
                    yield key, {"upload_id": entry.name}, started

    def list_prefix(self, bucket: str, prefix: str) -> Iterator[str]:
        root = self._root(bucket)
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if head:
            self._path(bucket, head)  # a valid key prefix: no escape, nothing hidden
        start = root / head if head else root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == root:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            dirnames.sort()
            for name in sorted(filenames):
                key = (Path(dirpath) / name).relative_to(root).as_posix()
                if key.startswith(prefix):
                    yield key
