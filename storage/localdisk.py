"""Local-disk storage: each bucket is a directory under ``WORKDIR``.

Settings: ``WORKDIR`` (root), ``S3_QUARANTINE`` / ``S3_PERM`` / ``S3_REJECT`` (directory
names of the three buckets, defaults ``upload-quarantine``, ``upload-perm``,
``upload-reject``), ``PUBLIC_URL`` and ``URL_SIGNING_KEY`` (signed download URLs, served by
the gateway itself under ``core.signing.DOWNLOAD_PREFIX``).

Layout: ``<WORKDIR>/<bucket dir>/<key>``; keys may hold ``/`` (sub-directories) but never
``..``, ``.`` or empty components, a leading ``/`` or NUL, and may not start with
``.incomplete``, ``.resumable`` or ``.direct`` (``ValueError``). Objects being written live in
``<bucket dir>/.incomplete/<name>.part-<random>`` until ``commit`` fsyncs the file,
renames it into place and fsyncs the directory, so a crash never shows a partial object
and ``list_keys`` never sees one. Resumable objects (tus uploads) are appended to in
``<bucket dir>/.resumable/`` (``storage.localdisk_resumable``), and direct uploads' parts
(upload areas) in ``<bucket dir>/.direct/`` (``storage.localdisk_direct``): neither
``list_keys`` nor ``cleanup_incomplete`` touch them. All buckets must sit on one filesystem
(``move`` is a rename). Large objects are written out as they arrive and leave the page
cache once on disk (``storage.localdisk_writeback``).

Signed URLs name the *logical* bucket (``quarantine``, ``perm``, ``reject``): the download
handler verifies the signature and reads through this driver with the same name.

Errors: a full, over-quota, read-only or failing disk (``ENOSPC``, ``EDQUOT``, ``EROFS``,
``EIO``) is ``StorageUnavailable``; a missing object is ``FileNotFoundError``.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from core.settings import Settings
from core.signing import sign_download_url
from storage import BUCKETS, ObjectWriter, Storage, StorageUnavailable, object_age
from storage.disposition import base_name
from storage.localdisk_direct import DIRECT_DIR, LocalDiskDirect
from storage.localdisk_resumable import RESUMABLE_DIR, LocalDiskResumable
from storage.localdisk_writeback import WriteBehind

logger = logging.getLogger(__name__)

INCOMPLETE_DIR = ".incomplete"
# Small writes are gathered up to this size before a system call; larger ones go straight
# to the file, so a 1 GiB body costs one copy and no per-write fsync.
WRITE_BUFFER = 1024 * 1024
# Disk-level failures an operator can end (a full or read-only disk, a directory made
# unwritable or immutable: EACCES, EPERM): the storage is unavailable, and what needs it
# (an upload, a verdict's move) waits or answers 503 instead of failing for good.
UNAVAILABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO,
                                errno.EACCES, errno.EPERM})
# what no key may start with: writes in progress, tus objects, direct uploads' parts
HIDDEN_DIRS = (INCOMPLETE_DIR, RESUMABLE_DIR, DIRECT_DIR)
# the health check writes this much (not synced) to each bucket's .incomplete and removes it
PROBE_BYTES = 4096


@contextmanager
def _translate() -> Iterator[None]:
    """Disk-level failures become ``StorageUnavailable``; the rest pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno in UNAVAILABLE_ERRNOS:
            raise StorageUnavailable(f"local disk: {exc}") from exc
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if "\x00" in key or key.startswith("/"):
        raise ValueError(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] in HIDDEN_DIRS:
        raise ValueError(f"invalid object key {key!r}")


class LocalDiskWriter(ObjectWriter):
    """Writes to a temporary file; ``commit`` makes it durable and renames it into place."""

    def __init__(self, temp_path: Path, final_path: Path) -> None:
        self._temp = temp_path
        self._final = final_path
        self._buffer = bytearray()
        self._fd: int | None = None
        self._done = False
        self._written = 0
        self.size = 0
        with _translate():
            self._fd = os.open(
                temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
        self._behind = WriteBehind(self._fd, 0)

    def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("write to a committed or aborted object")
        if self._buffer and len(self._buffer) + len(data) >= WRITE_BUFFER:
            self._flush()
        if len(data) >= WRITE_BUFFER:
            self._guarded(self._write_all, memoryview(data))
        else:
            self._buffer += data
        self.size += len(data)

    def commit(self) -> None:
        if self._done:
            raise ValueError("commit of a committed or aborted object")
        self._guarded(self._commit)
        self._done = True

    def abort(self) -> None:
        self._done = True
        self._buffer = bytearray()
        self._close()
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass
        except OSError:
            logger.warning("cannot remove temporary file %s", self._temp, exc_info=True)

    def _guarded(self, func: Callable[..., None], *args: object) -> None:
        """Run ``func``; on any failure abort, translating disk errors."""
        try:
            with _translate():
                func(*args)
        except BaseException:
            self.abort()
            raise

    def _flush(self) -> None:
        if self._buffer:
            self._guarded(self._write_all, memoryview(self._buffer))
            self._buffer = bytearray()

    def _write_all(self, view: memoryview) -> None:
        assert self._fd is not None
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._written += written
        self._behind.wrote(self._written)

    def _commit(self) -> None:
        self._write_all(memoryview(self._buffer))
        self._buffer = bytearray()
        assert self._fd is not None
        os.fsync(self._fd)
        self._behind.synced(self._written)
        self._close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, self._final)
        _fsync_dir(self._final.parent)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class LocalDiskStorage(LocalDiskResumable, LocalDiskDirect, Storage):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._roots = {
            name: (settings.workdir / settings.buckets[name]).resolve() for name in BUCKETS
        }
        with _translate():
            for root in self._roots.values():
                (root / INCOMPLETE_DIR).mkdir(parents=True, exist_ok=True)

    def _root(self, bucket: str) -> Path:
        try:
            return self._roots[bucket]
        except KeyError:
            raise ValueError(f"unknown bucket {bucket!r}; use one of {BUCKETS}") from None

    def _path(self, bucket: str, key: str) -> Path:
        _check_key(key)
        root = self._root(bucket)
        path = root / key
        # A symlinked sub-directory must not lead outside the bucket either.
        if os.path.commonpath([root, os.path.realpath(path.parent)]) != str(root):
            raise ValueError(f"object key {key!r} escapes its bucket")
        return path

    def open_writer(self, bucket: str, key: str) -> ObjectWriter:
        final = self._path(bucket, key)
        name = f"{final.name[:100]}.part-{secrets.token_hex(8)}"
        return LocalDiskWriter(self._root(bucket) / INCOMPLETE_DIR / name, final)

    def open_reader(self, bucket: str, key: str) -> BinaryIO:
        path = self._path(bucket, key)
        try:
            with _translate():
                return open(path, "rb")
        except IsADirectoryError:
            raise FileNotFoundError(errno.ENOENT, "no such object", str(path)) from None

    def size(self, bucket: str, key: str) -> int:
        path = self._path(bucket, key)
        with _translate():
            if not path.is_file():
                raise FileNotFoundError(errno.ENOENT, "no such object", str(path))
            return path.stat().st_size

    def exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).is_file()

    def move(self, src_bucket: str, dst_bucket: str, key: str) -> None:
        with _translate():
            for directory in self._rename(src_bucket, dst_bucket, key):
                _fsync_dir(directory)

    def move_many(self, moves: Sequence[tuple[str, str, str]]) -> list[FileNotFoundError | None]:
        """Rename every object, then fsync each directory involved once."""
        results: list[FileNotFoundError | None] = []
        directories: dict[Path, None] = {}
        with _translate():
            for src_bucket, dst_bucket, key in moves:
                try:
                    directories.update(dict.fromkeys(self._rename(src_bucket, dst_bucket, key)))
                    results.append(None)
                except FileNotFoundError as exc:
                    results.append(exc)
            for directory in directories:
                _fsync_dir(directory)
        return results

    def _rename(self, src_bucket: str, dst_bucket: str, key: str) -> tuple[Path, ...]:
        """Rename without syncing; returns the directories to fsync (none when the object
        was moved already: a redelivered verdict)."""
        src = self._path(src_bucket, key)
        dst = self._path(dst_bucket, key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            if dst.is_file():
                return ()
            raise
        return (dst.parent,) if src.parent == dst.parent else (dst.parent, src.parent)

    def delete(self, bucket: str, key: str) -> None:
        path = self._path(bucket, key)
        with _translate():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def list_keys(self, bucket: str) -> Iterator[str]:
        root = self._root(bucket)
        for dirpath, dirnames, filenames in os.walk(root):
            if Path(dirpath) == root:
                dirnames[:] = [d for d in dirnames if d not in HIDDEN_DIRS]
            dirnames.sort()
            relative = Path(dirpath).relative_to(root)
            for name in sorted(filenames):
                yield (relative / name).as_posix()

    def list_aged(self, bucket: str) -> Iterator[tuple[str, float]]:
        root = self._root(bucket)
        now = self._disk_now(root / INCOMPLETE_DIR)
        for key in self.list_keys(bucket):
            try:
                modified = (root / key).stat().st_mtime
            except FileNotFoundError:
                continue
            yield key, object_age(key, now - modified)

    def cleanup_incomplete(self, min_age: float) -> int:
        """Remove temporary files in ``.incomplete`` not written to for ``min_age``
        seconds (by the disk's clock) and, when their name starts with a key that tells
        its age, created that long ago."""
        removed = 0
        for root in self._roots.values():
            incomplete = root / INCOMPLETE_DIR
            incomplete.mkdir(parents=True, exist_ok=True)
            now = self._disk_now(incomplete)
            with os.scandir(incomplete) as entries:
                for entry in entries:
                    try:
                        age = object_age(entry.name, now - entry.stat().st_mtime)
                        if age > min_age:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        if removed:
            logger.info("removed %d incomplete object(s)", removed)
        return removed

    @staticmethod
    def _disk_now(directory: Path) -> float:
        """The filesystem's clock: the mtime of a file created now (on a WORKDIR shared
        over NFS the server stamps files, whatever this machine's clock says)."""
        probe = directory / f".clock-{secrets.token_hex(8)}"
        with _translate():
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                return os.fstat(fd).st_mtime
            finally:
                os.close(fd)
                os.unlink(probe)

    def signed_url(self, bucket: str, key: str, expires_in: int,
                   filename: str | None = None) -> str:
        _check_key(key)
        self._root(bucket)
        return sign_download_url(
            self._settings.public_url, self._settings.url_signing_key, bucket, key, expires_in,
            filename=base_name(filename) if filename else None,
        )

    def check(self) -> None:
        """Each bucket directory is writable and takes a ``PROBE_BYTES`` write (through
        the writer's own write path), so a full disk or quota shows here, not only in
        the uploads' 503s."""
        for name, root in self._roots.items():
            incomplete = root / INCOMPLETE_DIR
            if not (incomplete.is_dir() and os.access(incomplete, os.W_OK | os.X_OK)):
                raise StorageUnavailable(f"bucket {name!r} directory {root} is not writable")
            if not os.access(root, os.W_OK | os.X_OK):
                raise StorageUnavailable(f"bucket {name!r} directory {root} is not writable")
            probe = incomplete / f".probe-{secrets.token_hex(8)}"
            writer = LocalDiskWriter(probe, probe)
            try:
                writer._guarded(writer._write_all, memoryview(bytes(PROBE_BYTES)))
            except StorageUnavailable as exc:
                raise StorageUnavailable(f"bucket {name!r} directory {root}: {exc}") from exc
            finally:
                writer.abort()
