"""Object storage: one small interface, one module per backend.

Buckets are named by role: ``quarantine``, ``perm`` and ``reject``; each driver maps them
to its configured bucket (S3) or directory (localdisk). Every method blocks: callers on an
event loop run them in an executor.

Drivers translate backend errors at their boundary: a missing object is
``FileNotFoundError``, a backend that cannot take or give data now (S3 unreachable, disk
full) is ``StorageUnavailable``; anything else is re-raised as is.

Optional capabilities are separate small interfaces, checked once at start-up
(``resumable(storage)``): ``ResumableStorage`` appends to an incomplete object across
requests and processes (tus uploads); storage/direct.py holds those of upload areas
(direct multipart uploads, prefix listing, object tags).
"""
from __future__ import annotations

import importlib
import secrets
import time
from abc import ABC, abstractmethod
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from core.settings import Settings

BUCKETS = ("quarantine", "perm", "reject")

DRIVERS = {
    "localdisk": "storage.localdisk.LocalDiskStorage",
    "s3": "storage.s3.S3Storage",
}


class StorageUnavailable(Exception):
    """The backend cannot store or serve data right now (the client should retry)."""


class ObjectWriter(ABC):
    """A new object being written. Nothing is visible under its key until ``commit``."""

    size: int = 0

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data``; may buffer."""

    @abstractmethod
    def commit(self) -> None:
        """Make the object durable and visible (fsync and rename; completed multipart)."""

    @abstractmethod
    def abort(self) -> None:
        """Throw away everything written; safe to call twice or after a failed write."""


class Storage(ABC):
    @abstractmethod
    def open_writer(self, bucket: str, key: str) -> ObjectWriter:
        """Start writing object ``key`` in ``bucket``."""

    @abstractmethod
    def open_reader(self, bucket: str, key: str) -> BinaryIO:
        """A readable binary stream of the object; ``FileNotFoundError`` if missing."""

    @abstractmethod
    def size(self, bucket: str, key: str) -> int:
        """Size in bytes; ``FileNotFoundError`` if missing."""

    @abstractmethod
    def exists(self, bucket: str, key: str) -> bool:
        ...

    @abstractmethod
    def move(self, src_bucket: str, dst_bucket: str, key: str) -> None:
        """Move an object between buckets. Idempotent: when the source is gone and the
        destination holds the object, it returns quietly (a redelivered verdict);
        ``FileNotFoundError`` when neither has it."""

    def move_many(self, moves: Sequence[tuple[str, str, str]]) -> list[FileNotFoundError | None]:
        """``move(src_bucket, dst_bucket, key)`` for each of ``moves`` (a batch of
        verdicts); per move ``None`` or the ``FileNotFoundError`` it raised. Every move is
        durable when this returns; a driver may sync them together (localdisk)."""
        results: list[FileNotFoundError | None] = []
        for src_bucket, dst_bucket, key in moves:
            try:
                self.move(src_bucket, dst_bucket, key)
                results.append(None)
            except FileNotFoundError as exc:
                results.append(exc)
        return results

    @abstractmethod
    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; a missing one is fine."""

    @abstractmethod
    def list_keys(self, bucket: str) -> Iterator[str]:
        """Keys of committed objects in ``bucket``."""

    @abstractmethod
    def list_aged(self, bucket: str) -> Iterator[tuple[str, float]]:
        """``(key, age in seconds)`` of each committed object in ``bucket`` (as
        ``list_keys``); the age is ``object_age``'s, the smaller of the backend's and the
        key's own."""

    @abstractmethod
    def cleanup_incomplete(self, min_age: float) -> int:
        """Remove half-written objects (temporary files, unfinished multipart uploads)
        older than ``min_age`` seconds (``object_age``): what a writer that crashed left.
        A live writer is younger than the longest a write may take, which the caller
        passes. Returns how many were removed."""

    @abstractmethod
    def signed_url(self, bucket: str, key: str, expires_in: int,
                   filename: str | None = None) -> str:
        """A URL that fetches the object with a plain GET until it expires; with
        ``filename``, served as an attachment of that name (``Content-Disposition``,
        storage/disposition.py)."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``StorageUnavailable`` when the backend cannot be used (health)."""

    def close(self) -> None:
        """Release connections; the default has nothing to release."""


RESUMABLE_PREFIX = "resumable/"
# objects of an upload area (areas/): their area's, never the general clean-up's
AREAS_PREFIX = "areas/"
OWNED_PREFIXES = (RESUMABLE_PREFIX, AREAS_PREFIX)


def owned(key: str) -> bool:
    """Whether ``key`` belongs to an owner that cleans up after itself (a resumable
    upload, an upload area): the general clean-up leaves it alone."""
    return key.startswith(OWNED_PREFIXES)


def new_object_key(now: float | None = None) -> str:
    """A fresh object key: a UUID version 7 in hex (32 characters), whose first 48 bits
    are the creation time in milliseconds, so that the key itself tells its age."""
    millis = int((time.time() if now is None else now) * 1000) & (2**48 - 1)
    rand = secrets.randbits(74)
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
    return f"{value:032x}"


def key_time(key: str) -> float | None:
    """The creation time (epoch seconds) a ``new_object_key`` carries, in a key or in a
    name that starts with one; None for any other key (older uuid4 keys, bundles)."""
    head = key.rsplit("/", 1)[-1][:32]
    if len(head) != 32 or head[12] != "7" or head[16] not in "89ab":
        return None
    try:
        return int(head[:12], 16) / 1000.0
    except ValueError:
        return None


def object_age(key: str, backend_age: float, now: float | None = None) -> float:
    """How old an object (or a write in progress) is, for clean-up: the smaller of the
    age the backend reports (on its own clock) and the age its key tells (on its writer's
    clock), so that neither a backend that reports a wrong time (moto's fixed multipart
    initiation date) nor a writer whose clock runs ahead makes a live write look old."""
    created = key_time(key)
    if created is None:
        return backend_age
    return min(backend_age, (time.time() if now is None else now) - created)


class ResumableWriter(ABC):
    """Appends to an incomplete object from the offset its last recorded checkpoint
    names. Bytes written after that checkpoint by a writer that died are dropped (or
    overwritten): the recorded state is the truth. Used by one thread at a time."""

    offset: int = 0

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data``; may buffer (a bounded amount)."""

    @abstractmethod
    def checkpoint(self, final: bool = False) -> dict[str, Any]:
        """Make everything written so far durable and return the state to record with
        ``offset``. ``final``: nothing follows (the last piece may be short)."""

    def recorded(self) -> None:
        """The state of the last checkpoint is recorded: drop what it replaced."""

    @abstractmethod
    def close(self) -> None:
        """Release local resources; what was not checkpointed is not kept."""


class ResumableStorage(ABC):
    """Optional capability: objects written by several requests, possibly through
    several processes, resumed from a recorded ``(offset, state)``.

    Keys start with ``RESUMABLE_PREFIX``. While incomplete, an object is invisible to
    ``list_keys`` and left alone by ``cleanup_incomplete``: its owner (the database row
    that names its key) decides when it is complete or discarded."""

    @abstractmethod
    def open_resumable(self, bucket: str, key: str, offset: int, state: dict[str, Any],
                       size_hint: int) -> ResumableWriter:
        """Continue object ``key`` at ``offset`` with the ``state`` its last checkpoint
        returned (``{}`` for a new one). ``size_hint``: the final size or an upper bound
        of it (a driver may size its parts by it)."""

    @abstractmethod
    def complete_resumable(self, bucket: str, key: str, state: dict[str, Any],
                           size: int) -> None:
        """Make the object visible under ``key`` with its ``size`` checkpointed bytes.
        Idempotent: an object completed already (a crash after this, a retry) is fine."""

    @abstractmethod
    def discard_resumable(self, bucket: str, key: str) -> None:
        """Remove whatever incomplete data exists for ``key`` (not a completed object)."""

    @abstractmethod
    def list_resumable(self, bucket: str) -> Iterator[tuple[str, float]]:
        """Keys with incomplete data in ``bucket`` and when each was started (epoch
        seconds): the owner's sweeper discards those no live upload names."""


def resumable(storage: Storage) -> ResumableStorage | None:
    """The storage's resumable capability, or None when the driver has none."""
    return storage if isinstance(storage, ResumableStorage) else None


def get_storage(settings: Settings) -> Storage:
    """Build the driver named by ``settings.storage_driver`` (imported lazily)."""
    try:
        dotted = DRIVERS[settings.storage_driver]
    except KeyError:
        raise ValueError(
            f"unknown STORAGE_DRIVER {settings.storage_driver!r}; use one of {sorted(DRIVERS)}"
        ) from None
    module_name, class_name = dotted.rsplit(".", 1)
    driver: Callable[[Settings], Storage] = getattr(importlib.import_module(module_name), class_name)
    return driver(settings)
