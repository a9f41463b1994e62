"""Checksums of a stored file in one streaming pass: sha1, sha256, crc32c and the S3
ETag recomputed for the part size the file was stored with.

The object is read in blocks of ``BLOCK``; each block is hashed by three threads at once
(sha256; sha1; md5 per part and crc32c), which hashlib and crc32c let run in parallel
(they release the GIL on large buffers), while the next block is read. The pass costs
about as long as its slowest hash (bench/areas.py measures it against sha256 alone).

The S3 ETag: ``part_size`` 0 means a single ``PutObject`` (the ETag is the object's
MD5); otherwise a multipart upload of parts of ``part_size`` bytes (the last shorter),
whose ETag is the MD5 of the parts' binary MD5s, ``-`` and the number of parts.
crc32c is the Castagnoli CRC (the ``crc32c`` package), as 8 lower-case hex digits.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import Executor, Future
from typing import BinaryIO

import crc32c

BLOCK = 8 * 1024 * 1024


class ETag:
    """The S3 ETag of bytes stored with ``part_size`` (0: one PutObject)."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.md5 = hashlib.md5()  # noqa: S324 - S3's checksum, not a security one
        self.fill = 0
        self.parts: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        if not self.part_size:
            self.md5.update(data)
            return
        view = memoryview(data)
        while view:
            take = view[: self.part_size - self.fill]
            self.md5.update(take)
            self.fill += len(take)
            view = view[len(take):]
            if self.fill == self.part_size:
                self._close_part()

    def _close_part(self) -> None:
        self.parts.append(self.md5.digest())
        self.md5 = hashlib.md5()  # noqa: S324
        self.fill = 0

    def hexdigest(self) -> str:
        if not self.part_size:
            return self.md5.hexdigest()
        parts = list(self.parts)
        if self.fill or not parts:
            parts.append(self.md5.digest())
        return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"  # noqa: S324


class FileChecksums:
    """Feed blocks with ``update``; ``result()`` gives the four checksums and the size."""

    def __init__(self, part_size: int) -> None:
        self.sha1 = hashlib.sha1()  # noqa: S324 - a checksum the ingestion service asks for
        self.sha256 = hashlib.sha256()
        self.etag = ETag(part_size)
        self.crc = 0
        self.size = 0

    def _md5_crc(self, block: bytes) -> None:
        self.etag.update(block)
        self.crc = crc32c.crc32c(block, self.crc)

    def update(self, block: bytes, executor: Executor | None = None) -> None:
        """Hash ``block``: on three threads of ``executor`` at once, or here."""
        self.size += len(block)
        if executor is None:
            self.sha1.update(block)
            self.sha256.update(block)
            self._md5_crc(block)
            return
        futures: list[Future[None]] = [executor.submit(self.sha1.update, block),
                                       executor.submit(self.sha256.update, block),
                                       executor.submit(self._md5_crc, block)]
        for future in futures:
            future.result()

    def result(self) -> dict[str, str]:
        return {"sha1": self.sha1.hexdigest(), "sha256": self.sha256.hexdigest(),
                "crc32c": f"{self.crc:08x}", "s3_etag": self.etag.hexdigest()}


def read_block(stream: BinaryIO, size: int = BLOCK) -> bytes:
    """Up to ``size`` bytes (fewer only at the end)."""
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def checksum_stream(stream: BinaryIO, part_size: int, hashers: Executor,
                    reader: Executor) -> tuple[dict[str, str], int]:
    """One pass over ``stream``: the next block is read on ``reader`` while this one is
    hashed on ``hashers`` (three threads). Returns the checksums and the size."""
    sums = FileChecksums(part_size)
    pending = reader.submit(read_block, stream)
    while True:
        block = pending.result()
        if not block:
            break
        pending = reader.submit(read_block, stream)
        sums.update(block, hashers)
    return sums.result(), sums.size
