"""A resumable download of one remote file version into its incomplete object or file.

Where the payload is the file itself (no steps, not stored compressed) and storage has
resumable objects (``storage.ResumableStorage``, as tus uses them), the download writes
straight into an incomplete quarantine object (``ObjectPart``): each byte is written once,
hashed as it goes by hashers whose state is saved with every checkpoint
(``core.resumable.HashState``), and once complete the object is made visible and recorded
as it stands (``PullIngest.ingest_object``). Otherwise it writes the incomplete file
``WORKDIR/pull-work/incomplete/<file key>.part`` (``PartFile``), which the steps read
once it is complete. (The incomplete file also fed a quarantine stream as it arrived:
bench/pull.py measured the second write at about a fifth of the puller's samples for
1 GiB.)

Either holds the file's first bytes in order. Every ``CHECKPOINT_SECONDS``, when the
transfer stops for any reason (a dropped connection included) and at the end, it is made
durable and its length recorded in the database (``pull_files.bytes_done``, with
``resume_state`` for an object); the next attempt, in this process or after a restart (in
another process too, for an object in shared storage), drops what lies beyond that length
and asks the server only for the rest (SFTP reads at an offset). Blocks that had arrived
out of order beyond the contiguous prefix are read again. The end is verified: exactly
the listed size, from a file whose size and mtime are still the listed ones (else
``changed``). A puller that loses its provider's lease stops writing before its next
block (``LeaseLost``): the puller that takes the job over continues the same object.

The sha256 (and sha1 when asked) of the whole file are computed as the bytes are
written: an object's continue from the hash state of its checkpoint, an incomplete file's
after re-reading its prefix once when a transfer resumes. Nothing partial is ever visible
or announced: an incomplete object is invisible to listings, left alone by the general
clean-up and owned by its ``pull_files`` row (the tus sweeper asks, through
``pull.store.live_object_keys``, before it discards one); the caller records the payload
only once it is complete.

Small files (``fetch_whole``: at most ``WHOLE_MAX`` bytes, nothing held from an earlier
attempt) are read into memory in one go instead: no incomplete file, no fsync and no
checkpoint of their own (a transfer that is cut is simply read again: there is nothing
worth resuming), the open's answer followed at once by the ``fstat`` and the reads,
pipelined. The payload's durability is the ingest's (quarantine's fsync), as for any file.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import asyncssh

from core.ingest import SNIFF_BYTES, PayloadWriter
from core.resumable import HashState
from pull.remote import (
    BLOCK,
    CONNECTION_ERRORS,
    REQUESTS,
    RemoteFileError,
    Session,
    connection_error,
    file_error,
)
from pull.store import FileRow
from storage import (
    RESUMABLE_PREFIX,
    ResumableStorage,
    ResumableWriter,
    Storage,
    new_object_key,
    resumable,
)

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0
WRITE_BATCH = 1024 * 1024
READ_BLOCK = 1024 * 1024
# At most this many bytes are fetched whole into memory (one ingest block: the ingest
# core writes them with one trip to the pool); larger files go through the incomplete file.
WHOLE_MAX = 1024 * 1024


class LeaseLost(Exception):
    """Another puller holds the provider now: leave the job (and this file) to it."""


@dataclass(frozen=True)
class Downloaded:
    path: Path | None  # the incomplete file; None for an object (``stored``)
    size: int
    sha256: str | None  # None: not hashed (a stream given up), the caller hashes the file
    sha1: str | None
    read: int  # bytes this attempt read from the server
    streamed: bool = False  # every byte also went to the stream, which holds the payload
    stored: ObjectState | None = None  # the complete, checkpointed quarantine object


@dataclass(frozen=True)
class ObjectState:
    """What ``pull_files.resume_state`` holds for a download into a quarantine object."""

    key: str
    storage: dict[str, Any]  # the driver's state at the checkpoint
    hashes: bytes  # ``HashState.dump()``
    head: bytes  # the first ``SNIFF_BYTES``, for the MIME type

    def dumps(self) -> str:
        return json.dumps({"key": self.key, "storage": self.storage,
                           "hashes": base64.b64encode(self.hashes).decode(),
                           "head": base64.b64encode(self.head).decode()})

    @classmethod
    def loads(cls, text: str) -> ObjectState:
        found = json.loads(text)
        return cls(found["key"], found["storage"], base64.b64decode(found["hashes"]),
                   base64.b64decode(found["head"]))

    def digests(self, sha1: bool) -> dict[str, str]:
        return HashState(self.hashes, sha1).digests()


def complete_object(row: FileRow, sha1: bool) -> Downloaded | None:
    """A file whose every byte is checkpointed in its object already (its record did not
    follow: a restart, a database failure): nothing to fetch."""
    if not row.resume_state or row.bytes_done != row.size:
        return None
    stored = ObjectState.loads(row.resume_state)
    digests = stored.digests(sha1)
    return Downloaded(None, row.size, digests["sha256"], digests.get("sha1"), 0, stored=stored)


class PartFile:
    """The incomplete file, written in order from ``offset``; blocking (executor)."""

    def __init__(self, path: Path, offset: int, sha1: bool, hashing: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self.offset = min(offset, os.fstat(self.fd).st_size)
            os.ftruncate(self.fd, self.offset)
            self.hashing = hashing
            self.sha256 = hashlib.sha256()
            self.sha1 = hashlib.sha1() if sha1 else None  # noqa: S324 - asset events name it
            if hashing:
                self._hash_prefix()
            else:
                os.lseek(self.fd, self.offset, os.SEEK_SET)
        except BaseException:
            os.close(self.fd)
            raise

    def read_prefix(self, position: int) -> bytes:
        return os.pread(self.fd, min(READ_BLOCK, self.offset - position), position)

    def _hash_prefix(self) -> None:
        position = 0
        while position < self.offset:
            block = os.pread(self.fd, min(READ_BLOCK, self.offset - position), position)
            if not block:
                raise OSError(f"{self.path} is shorter than its checkpoint")
            self._hash(block)
            position += len(block)
        os.lseek(self.fd, self.offset, os.SEEK_SET)

    def _hash(self, block: bytes) -> None:
        if not self.hashing:
            return
        self.sha256.update(block)
        if self.sha1 is not None:
            self.sha1.update(block)

    def write(self, block: bytes) -> None:
        view = memoryview(block)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self._hash(block)
        self.offset += len(block)

    def sync(self) -> int:
        os.fsync(self.fd)
        return self.offset

    def close(self) -> None:
        os.close(self.fd)


class ObjectPart:
    """The incomplete quarantine object, written in order from ``offset`` and hashed as it
    goes; blocking (executor). A checkpoint's state (``state()``) is recorded after
    ``sync``; ``recorded()`` then lets the driver drop what it replaced."""

    def __init__(self, objects: Storage, row: FileRow, sha1: bool) -> None:
        storage = resumable(objects)
        assert storage is not None, "the caller checks the capability"
        self.storage: ResumableStorage = storage
        self.size = row.size
        known = ObjectState.loads(row.resume_state) if row.resume_state else None
        self.writer: ResumableWriter | None = None
        if known is not None:
            try:
                self._open(known.key, row.bytes_done, known.storage, known.hashes, known.head,
                           sha1)
                return
            except FileNotFoundError as exc:  # lost, or completed by an attempt never recorded
                logger.warning("path=%s incomplete object %s unusable (%s): starting again",
                               row.path, known.key, exc)
                self.storage.discard_resumable("quarantine", known.key)
                objects.delete("quarantine", known.key)
        self._open(RESUMABLE_PREFIX + new_object_key(), 0, {}, b"", b"", sha1)

    def _open(self, key: str, offset: int, state: dict[str, Any], hashes: bytes, head: bytes,
              sha1: bool) -> None:
        self.writer = self.storage.open_resumable("quarantine", key, offset, state, self.size)
        self.key = key
        self.offset = offset
        self.hashes = HashState(hashes or None, sha1)
        self.head = head
        self._storage_state = state

    def write(self, block: bytes) -> None:
        assert self.writer is not None
        self.hashes.update(block)
        if len(self.head) < SNIFF_BYTES:
            self.head += block[:SNIFF_BYTES - len(self.head)]
        self.writer.write(block)
        self.offset += len(block)

    def sync(self) -> int:
        assert self.writer is not None
        self._storage_state = self.writer.checkpoint(final=self.offset == self.size)
        return self.offset

    def state(self) -> ObjectState:
        return ObjectState(self.key, self._storage_state, self.hashes.dump(), self.head)

    def recorded(self) -> None:
        if self.writer is not None:
            self.writer.recorded()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Download:
    """Fetch ``row`` into the part ``open_part`` returns (a ``PartFile`` or an
    ``ObjectPart``, opened in the executor) through ``session``; ``checkpoint(offset,
    state)`` records progress (it is awaited once the data is durable)."""

    def __init__(self, session: Session, row: FileRow, open_part: Callable[[], Any],
                 executor: Executor, checkpoint: Callable[[int, str | None], Awaitable[None]],
                 sha1: bool, stream: PayloadWriter | None = None, stream_seconds: float = 0.0,
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.session = session
        self.stream = stream
        self.stream_seconds = stream_seconds
        self.row = row
        self.open_part = open_part
        self.executor = executor
        self.checkpoint = checkpoint
        self.sha1 = sha1
        self.alive = alive
        self.timeout = session.provider.timeout
        self.read = 0
        self._part: Any = None
        self._inflight: asyncio.Future[Any] | None = None
        self._recorded = row.bytes_done

    async def _run(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def run(self) -> Downloaded:
        part = self._part = await self._run(self.open_part)
        self._recorded = part.offset
        try:
            if self.stream is not None:
                await self._feed_prefix(part)
            if part.offset < self.row.size:
                await self._fetch(part)
            await self._settle()
            if part.offset != self.row.size:
                raise RemoteFileError("changed", f"{self.row.path}: {part.offset} bytes "
                                      f"arrived, {self.row.size} were listed")
            if isinstance(part, ObjectPart):
                await self._save()  # the last piece too: the object is whole and recorded
                found = part.hashes.digests()
                return Downloaded(None, part.offset, found["sha256"], found.get("sha1"),
                                  self.read, stored=part.state())
            hashing = part.hashing
            sha1 = part.sha1.hexdigest() if part.sha1 and hashing else None
            if self.stream is not None:
                # the payload is made durable by the stream's commit: the incomplete file
                # needs no last fsync (a failure from here resumes from the last checkpoint)
                await self.stream.drain()
                return Downloaded(part.path, part.offset, self.stream.content_sha256,
                                  sha1, self.read, streamed=True)
            await self._save()
            return Downloaded(part.path, part.offset,
                              part.sha256.hexdigest() if hashing else None, sha1, self.read)
        except BaseException as exc:
            await self._settle(quiet=True)
            if part.offset > self._recorded and not isinstance(exc, LeaseLost):
                try:
                    await asyncio.shield(self._save())
                except Exception as exc:  # noqa: BLE001 - the first failure is the one to report
                    logger.warning("path=%s checkpoint after a failed transfer not recorded: %s",
                                   self.row.path, exc)
            raise
        finally:
            await self._run(part.close)

    async def _fetch(self, part: Any) -> None:
        handle = await _open(self.session, self.row, self.timeout)
        try:
            with _remote_errors(self.row):
                attrs = await asyncio.wait_for(handle.stat(), self.timeout)
                if (attrs.size, attrs.mtime) != (self.row.size, self.row.mtime):
                    raise RemoteFileError("changed",
                                          f"{self.row.path} changed since it was listed")
                await self._copy(handle, part.offset)
        finally:
            await _close_quietly(handle)

    async def _copy(self, handle: Any, offset: int) -> None:
        """Parallel reads arrive in any order: write the contiguous prefix as it grows."""
        waiting: dict[int, bytes] = {}
        batch: list[bytes] = []
        batched = 0
        expected = offset
        saved_at = time.monotonic()
        blocks = (await handle.read_parallel(self.row.size - offset, offset)).__aiter__()
        while True:
            try:  # a server that stops answering is one that went away
                at, data = await asyncio.wait_for(blocks.__anext__(), self.timeout)
            except StopAsyncIteration:
                break
            self.read += len(data)
            waiting[at] = data
            while expected in waiting:
                block = waiting.pop(expected)
                expected += len(block)
                batch.append(block)
                batched += len(block)
            if batched >= WRITE_BATCH:
                await self._write(b"".join(batch))
                batch, batched = [], 0
                if time.monotonic() - saved_at >= CHECKPOINT_SECONDS:
                    await self._save()
                    saved_at = time.monotonic()
        if batch:
            await self._write(b"".join(batch))

    async def _write(self, block: bytes) -> None:
        """One write in flight: the next batch is gathered while it runs. The stream
        (when there is one) gets the same block and writes it in parallel."""
        if self._inflight is not None:
            await self._inflight
        if not self.alive():  # the next holder continues from the last checkpoint
            raise LeaseLost(f"{self.row.path}: the provider's lease was lost")
        assert self._part is not None
        loop = asyncio.get_running_loop()
        self._inflight = asyncio.wrap_future(self.executor.submit(self._part.write, block),
                                             loop=loop)
        if self.stream is not None:
            if time.monotonic() - self.stream.opened > self.stream_seconds:
                await self._give_up_stream()
            else:
                await self.stream.write(block)

    async def _feed_prefix(self, part: PartFile) -> None:
        """A resumed transfer: the bytes already held go to the stream first."""
        assert self.stream is not None
        position = 0
        while position < part.offset:
            block = await self._run(part.read_prefix, position)
            if not block:
                raise OSError(f"{part.path} is shorter than its checkpoint")
            await self.stream.write(block)
            position += len(block)

    async def _give_up_stream(self) -> None:
        """The transfer is slow: a payload must be recorded within INGEST_DEADLINE of
        its stream's opening, so the file is ingested from the incomplete file instead,
        once complete (hashed then)."""
        stream, self.stream = self.stream, None
        assert stream is not None
        logger.info("path=%s slow transfer: ingested from the incomplete file once complete",
                    self.row.path)
        await stream.abort()

    async def _settle(self, quiet: bool = False) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            try:
                await inflight
            except Exception:  # noqa: BLE001 - the write that failed is being reported
                if not quiet:
                    raise

    async def _save(self) -> None:
        await self._settle()
        part = self._part
        assert part is not None
        if not self.alive():
            raise LeaseLost(f"{self.row.path}: the provider's lease was lost")
        offset = await self._run(part.sync)
        if isinstance(part, ObjectPart):
            await self.checkpoint(offset, part.state().dumps())
            await self._run(part.recorded)
        else:
            await self.checkpoint(offset, None)
        self._recorded = offset


@contextlib.contextmanager
def _remote_errors(row: FileRow) -> Iterator[None]:
    """SFTP and connection errors as the job's errors (the file's, or the session's)."""
    try:
        yield
    except asyncssh.SFTPError as exc:
        raise file_error(exc, row.path) from None
    except CONNECTION_ERRORS as exc:
        raise connection_error(exc) from None


async def _open(session: Session, row: FileRow, timeout: float) -> Any:
    with _remote_errors(row):
        return await asyncio.wait_for(
            session.client().open(session.remote_path(row.path), "rb", block_size=BLOCK,
                                  max_requests=REQUESTS), timeout)


async def _close_quietly(handle: Any) -> None:
    try:
        await asyncio.wait_for(handle.close(), 5)
    except (TimeoutError, *CONNECTION_ERRORS):
        pass


def fetch_whole_eligible(row: FileRow) -> bool:
    return row.size <= WHOLE_MAX and row.bytes_done == 0


async def fetch_whole(session: Session, row: FileRow) -> bytes:
    """The whole of a small remote file, checked against its listed size and mtime: open,
    then ``fstat`` and the reads sent together (one round trip for both), then close."""
    timeout = session.provider.timeout
    handle = await _open(session, row, timeout)
    try:
        with _remote_errors(row):
            # one byte more than listed: a file that grew since is told from one that did not
            attrs, data = await asyncio.wait_for(
                asyncio.gather(handle.stat(), handle.read(row.size + 1, 0)), timeout)
    finally:
        await _close_quietly(handle)
    if (attrs.size, attrs.mtime) != (row.size, row.mtime) or len(data) != row.size:
        raise RemoteFileError("changed", f"{row.path} changed since it was listed")
    assert isinstance(data, bytes)  # opened without an encoding
    return data
