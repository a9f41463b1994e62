"""Resumable objects on local disk (the ``ResumableStorage`` capability of localdisk).

An incomplete object ``resumable/<name>`` is the file ``<bucket dir>/.resumable/<name>``.
A writer opens it at the recorded offset and truncates what lies beyond (bytes a writer
that died had written but never checkpointed); ``checkpoint`` is an fsync (plus the
directory's, once, for a new file), so an offset recorded after it survives a power cut.
Written bytes go to the disk as they come and leave the page cache once there
(``storage.localdisk_writeback``).
``complete_resumable`` truncates the file to its size, fsyncs it and renames it to
``<bucket dir>/resumable/<name>``; ``list_keys`` and ``cleanup_incomplete`` never look in
``.resumable``.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from storage import RESUMABLE_PREFIX, ResumableStorage, ResumableWriter
from storage.localdisk_writeback import WriteBehind

RESUMABLE_DIR = ".resumable"
WRITE_BUFFER = 1024 * 1024


def resumable_name(key: str) -> str:
    """``resumable/<name>`` → ``<name>``: one path component, nothing hidden."""
    name = key[len(RESUMABLE_PREFIX):] if key.startswith(RESUMABLE_PREFIX) else ""
    if not name or "/" in name or "\x00" in name or name.startswith("."):
        raise ValueError(f"invalid resumable key {key!r}")
    return name


class LocalResumableWriter(ResumableWriter):
    def __init__(self, path: Path, offset: int, translate: Any) -> None:
        self._path = path
        self._translate = translate
        self._buffer = bytearray()
        # only a new object (offset 0) is created: one whose bytes were recorded and that
        # is missing now (completed already, or lost) must not come back empty
        self._new = offset == 0 and not path.exists()
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT if offset == 0 else 0)
        with translate():
            try:
                self._fd: int | None = os.open(path, flags, 0o644)
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, f"incomplete object is missing, its "
                                        f"checkpoint names {offset} bytes", str(path)) from None
            try:
                size = os.fstat(self._fd).st_size
                if size < offset:
                    raise FileNotFoundError(errno.ENOENT, f"incomplete object holds {size} "
                                            f"bytes, its checkpoint names {offset}", str(path))
                if size > offset:  # written after the last checkpoint by a writer that died
                    os.ftruncate(self._fd, offset)
                os.lseek(self._fd, offset, os.SEEK_SET)
            except BaseException:
                self.close()
                raise
        self.offset = offset
        self._behind = WriteBehind(self._fd, offset)

    def write(self, data: bytes) -> None:
        if self._buffer and len(self._buffer) + len(data) >= WRITE_BUFFER:
            self._flush()
        if len(data) >= WRITE_BUFFER:
            self._write_all(memoryview(data))
        else:
            self._buffer += data
        self.offset += len(data)

    def checkpoint(self, final: bool = False) -> dict[str, Any]:
        self._flush()
        assert self._fd is not None
        with self._translate():
            os.fsync(self._fd)
            self._behind.synced(self.offset)
            if self._new:
                fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._new = False
        return {}

    def close(self) -> None:
        self._buffer = bytearray()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _flush(self) -> None:
        if self._buffer:
            self._write_all(memoryview(self._buffer))
            self._buffer = bytearray()

    def _write_all(self, view: memoryview) -> None:
        assert self._fd is not None
        with self._translate():
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._behind.wrote(os.lseek(self._fd, 0, os.SEEK_CUR))


class LocalDiskResumable(ResumableStorage):
    """Mixin of ``LocalDiskStorage``, whose ``_root`` and ``_path`` it uses."""

    _root: Callable[[str], Path]
    _path: Callable[[str, str], Path]

    def _incomplete_path(self, bucket: str, key: str) -> Path:
        return self._root(bucket) / RESUMABLE_DIR / resumable_name(key)

    def open_resumable(self, bucket: str, key: str, offset: int, state: dict[str, Any],
                       size_hint: int) -> ResumableWriter:
        from storage.localdisk import _translate

        path = self._incomplete_path(bucket, key)
        with _translate():
            path.parent.mkdir(parents=True, exist_ok=True)
        return LocalResumableWriter(path, offset, _translate)

    def complete_resumable(self, bucket: str, key: str, state: dict[str, Any],
                           size: int) -> None:
        from storage.localdisk import _fsync_dir, _translate

        path = self._incomplete_path(bucket, key)
        final = self._path(bucket, key)
        with _translate():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if final.is_file() and final.stat().st_size == size:
                    return  # completed already
                raise
            try:
                if os.fstat(fd).st_size < size:
                    raise FileNotFoundError(errno.ENOENT, "incomplete object is short", str(path))
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
            _fsync_dir(final.parent)

    def discard_resumable(self, bucket: str, key: str) -> None:
        from storage.localdisk import _translate

        with _translate():
            try:
                os.unlink(self._incomplete_path(bucket, key))
            except FileNotFoundError:
                pass

    def list_resumable(self, bucket: str) -> Iterator[tuple[str, float]]:
        directory = self._root(bucket) / RESUMABLE_DIR
        if not directory.is_dir():
            return
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    yield RESUMABLE_PREFIX + entry.name, entry.stat().st_mtime
                except FileNotFoundError:
                    continue
