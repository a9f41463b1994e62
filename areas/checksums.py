"""Checksums of a stored file in one streaming pass: sha1, sha256, crc32c and the S3
ETag recomputed for the part size the file was stored with.

The object is read in blocks (``BLOCK``, cut at the part boundaries) by the calling
thread, and each block is handed to *lanes*: threads that each feed their own hashes,
block after block, in order (sha256; sha1 and crc32c; the parts' MD5s). hashlib and
crc32c release the GIL on large buffers, so the lanes run in parallel with each other and
with the reading, and no lane waits for another (a lane may fall ``QUEUED`` blocks
behind, then the reading waits for it; at most ``QUEUED + 2`` blocks a lane are held).
MD5 is the slowest hash (about 1.6 ns a byte here; sha1 and sha256 about 0.7 with
SHA-NI, crc32c 0.1), and a part's MD5 is independent of the others', so the parts go in
turn to ``MD5_LANES`` lanes: two parts can be hashed at once.

The pass costs the sum of the hashes' CPU, about 3.2 ns a byte against sha256's 0.75:
on two cores it cannot take less than half of that (bench/areas.py measures it beside
sha256 alone, read by the same ``hash_stream``).

The S3 ETag: ``part_size`` 0 means a single ``PutObject`` (the ETag is the object's
MD5); otherwise a multipart upload of parts of ``part_size`` bytes (the last shorter),
whose ETag is the MD5 of the parts' binary MD5s, ``-`` and the number of parts.
crc32c is the Castagnoli CRC (the ``crc32c`` package), as 8 lower-case hex digits.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from typing import Any, BinaryIO, Callable, Sequence

import crc32c

BLOCK = 8 * 1024 * 1024
QUEUED = 4  # blocks a lane may fall behind the reading
MD5_LANES = 2
LANES = 2 + MD5_LANES  # threads of a checksum pass


def etag_of(part_md5s: Sequence[bytes], part_size: int) -> str:
    """The ETag from the parts' binary MD5s (one for a single PutObject)."""
    if not part_size:
        return part_md5s[0].hex()
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"  # noqa: S324


# A lane's input: (part number, block), or None at the end.
Item = tuple[int, bytes] | None
Feed = Callable[[int, bytes], None]


class _Lane(threading.Thread):
    """Feeds every block of its queue in order; after an error it keeps taking blocks
    (so the reading never waits on a dead lane) and keeps the error for ``join``."""

    def __init__(self, feed: Feed) -> None:
        super().__init__(name="checksum-lane", daemon=True)
        self.feed = feed
        self.items: queue.Queue[Item] = queue.Queue(QUEUED)
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    self.feed(*item)
                except BaseException as exc:  # noqa: BLE001 - raised by the reading thread
                    self.error = exc


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


def hash_stream(stream: BinaryIO, feeds: Sequence[Feed], part_size: int = 0,
                shared: int = 0) -> int:
    """Read ``stream`` to its end in this thread, in blocks cut at the part boundaries
    (multiples of ``part_size``, when not 0), and feed each block to the lanes
    (``feed(part, block)``, parts counted from 0), each lane on a thread of its own.
    The last ``shared`` lanes share the parts: part n goes to the ``n % shared``-th of
    them; the others take every block. Returns the size read."""
    lanes = [_Lane(feed) for feed in feeds]
    queues = [lane.items for lane in lanes]
    every, size = len(lanes) - shared, 0
    try:
        while True:
            want = min(BLOCK, part_size - size % part_size) if part_size else BLOCK
            block = read_block(stream, want)
            if not block:
                break
            part = size // part_size if part_size else 0
            size += len(block)
            for items in queues[:every]:
                items.put((part, block))
            if shared:
                queues[every + part % shared].put((part, block))
    finally:
        for lane in lanes:
            lane.items.put(None)
        for lane in lanes:
            lane.join()
    for lane in lanes:
        if lane.error is not None:
            raise lane.error
    return size


def checksum_stream(stream: BinaryIO, part_size: int) -> tuple[dict[str, str], int]:
    """One pass over ``stream`` (read here) with ``LANES`` lanes hashing: sha256; sha1
    and crc32c; each part's MD5 on one of ``MD5_LANES`` lanes in turn. Returns the
    checksums and the size."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1()  # noqa: S324 - a checksum the ingestion service asks for
    crc = [0]
    md5s: dict[int, Any] = {}

    def feed_sha1_crc(part: int, block: bytes) -> None:
        sha1.update(block)
        crc[0] = crc32c.crc32c(block, crc[0])

    def feed_md5(part: int, block: bytes) -> None:
        if part not in md5s:
            md5s[part] = hashlib.md5()  # noqa: S324 - S3's checksum, not a security one
        md5s[part].update(block)

    lanes: list[Feed] = [lambda part, block: sha256.update(block), feed_sha1_crc]
    lanes += [feed_md5] * MD5_LANES
    size = hash_stream(stream, lanes, part_size, MD5_LANES)
    if not md5s:
        md5s[0] = hashlib.md5()  # noqa: S324 - an empty object
    etag = etag_of([md5s[n].digest() for n in sorted(md5s)], part_size)
    return {"sha1": sha1.hexdigest(), "sha256": sha256.hexdigest(),
            "crc32c": f"{crc[0]:08x}", "s3_etag": etag}, size
