"""A resumable download of one remote file version into its incomplete local file.

The incomplete file (``WORKDIR/pull-work/incomplete/<file key>.part``) holds the file's
first bytes in order. Every ``CHECKPOINT_SECONDS``, when the transfer stops for any reason
(a dropped connection included) and at the end, it is fsynced and its length recorded in
the database (``pull_files.bytes_done``); the next attempt, in this process or after a
restart, truncates it to that length and asks the server only for the rest (SFTP reads
at an offset). Blocks that had arrived out of order beyond the contiguous prefix are read
again. The end is verified: exactly the listed size, from a file whose size and mtime
are still the listed ones (else ``changed``).

The sha256 (and sha1 when asked) of the whole file are computed as the bytes are
written, after re-reading the prefix once when a transfer resumes. Nothing here reaches
quarantine: the caller ingests the file only once it is complete.

Small files (``fetch_whole``: at most ``WHOLE_MAX`` bytes, nothing held from an earlier
attempt) are read into memory in one go instead: no incomplete file, no fsync and no
checkpoint of their own (a transfer that is cut is simply read again: there is nothing
worth resuming), the open's answer followed at once by the ``fstat`` and the reads,
pipelined. The payload's durability is the ingest's (quarantine's fsync), as for any file.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import asyncssh

from core.ingest import PayloadWriter
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

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0
WRITE_BATCH = 1024 * 1024
READ_BLOCK = 1024 * 1024
# At most this many bytes are fetched whole into memory (one ingest block: the ingest
# core writes them with one trip to the pool); larger files go through the incomplete file.
WHOLE_MAX = 1024 * 1024


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str | None  # None: not hashed (a stream given up), the caller hashes the file
    sha1: str | None
    read: int  # bytes this attempt read from the server
    streamed: bool = False  # every byte also went to the stream, which holds the payload


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


class Download:
    """Fetch ``row`` into ``part`` through ``session``; ``checkpoint(offset)`` records
    progress (it is awaited after the data is fsynced)."""

    def __init__(self, session: Session, row: FileRow, part: Path, executor: Executor,
                 checkpoint: Callable[[int], Awaitable[None]], sha1: bool,
                 stream: PayloadWriter | None = None, stream_seconds: float = 0.0) -> None:
        self.session = session
        self.stream = stream
        self.stream_seconds = stream_seconds
        self.row = row
        self.part_path = part
        self.executor = executor
        self.checkpoint = checkpoint
        self.sha1 = sha1
        self.timeout = session.provider.timeout
        self.read = 0
        self._part: PartFile | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._recorded = row.bytes_done

    async def _run(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def run(self) -> Downloaded:
        hashing = self.stream is None or self.sha1  # the stream hashes sha256 itself
        part = self._part = await self._run(PartFile, self.part_path, self.row.bytes_done,
                                            self.sha1, hashing)
        try:
            if self.stream is not None:
                await self._feed_prefix(part)
            if part.offset < self.row.size:
                await self._fetch(part)
            await self._settle()
            if part.offset != self.row.size:
                raise RemoteFileError("changed", f"{self.row.path}: {part.offset} bytes "
                                      f"arrived, {self.row.size} were listed")
            sha1 = part.sha1.hexdigest() if part.sha1 and hashing else None
            if self.stream is not None:
                # the payload is made durable by the stream's commit: the incomplete file
                # needs no last fsync (a failure from here resumes from the last checkpoint)
                await self.stream.drain()
                return Downloaded(self.part_path, part.offset, self.stream.content_sha256,
                                  sha1, self.read, streamed=True)
            await self._save()
            return Downloaded(self.part_path, part.offset,
                              part.sha256.hexdigest() if hashing else None, sha1, self.read)
        except BaseException:
            await self._settle(quiet=True)
            if part.offset > self._recorded:
                try:
                    await asyncio.shield(self._save())
                except Exception as exc:  # noqa: BLE001 - the first failure is the one to report
                    logger.warning("path=%s checkpoint after a failed transfer not recorded: %s",
                                   self.row.path, exc)
            raise
        finally:
            await self._run(part.close)

    async def _fetch(self, part: PartFile) -> None:
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
        assert self._part is not None
        offset = await self._run(self._part.sync)
        await self.checkpoint(offset)
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
