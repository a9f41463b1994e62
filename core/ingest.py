"""The ingest path shared by HTTP uploads and the watcher: stream a payload into quarantine
with its checksums and sniffed MIME type, then record it and its announcement in one
database transaction (the outbox), after which nothing can lose it.

Writes are coalesced into blocks of ``BLOCK`` bytes and handed to a bounded thread pool;
at most one block per payload is being written while the next is gathered, so memory per
payload stays near 2 × ``BLOCK`` and a slow disk slows the client (backpressure). The
object is opened by the first block's task, so a small payload costs one trip to the pool
(open, write, fsync, rename) instead of two.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import logging
import time
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from bus.topics import service_topic
from core import metrics
from core.callbacks import callback_url
from core.checksums import describe_stored, served_name
from core.groupcommit import GroupCommitter
from core.mime import sniff
from core.settings import Settings
from db import Database, OutboxItem, utcnow
from storage import ObjectWriter, Storage, new_object_key

logger = logging.getLogger(__name__)

BLOCK = 1024 * 1024
# libmagic's cost grows with the head it is given (text: 0.37 ms for 1 KiB, 0.85 ms for
# 4 KiB here) while the types we route on (gzip, tar at offset 257, zip, text) are all
# decided within the first KiB: measured in the same run, 1 KiB and 4 KiB gave the same
# answers for text, OBJ, JSON, gzip and tar heads.
SNIFF_BYTES = 1024


@dataclass
class Payload:
    """What the client (or the watcher) says about a payload before its bytes arrive."""

    request_id: str
    service: str
    category: str
    content_type: str
    filename: str | None = None
    account: str | None = None
    org_id: str | None = None
    principal: str | None = None
    b64_identity: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "http"
    compress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    received_at: dt.datetime = field(default_factory=utcnow)
    note: str | None = None  # where it came from: the timeline's received entry says it


class PayloadWriter:
    """Streams one payload into quarantine. ``write`` awaits only when the previous block
    is still being written: that is the backpressure."""

    def __init__(self, payload: Payload, open_writer: Callable[[], ObjectWriter],
                 object_key: str, executor: Executor) -> None:
        self.payload = payload
        self.object_key = object_key
        # before any byte is stored: the ingest deadline counts from here (core.cleanup)
        self.opened = time.monotonic()
        self.size = 0
        self.stored_size = 0
        self.mime: str | None = None
        self._open_writer = open_writer
        self._writer: ObjectWriter | None = None
        self._executor = executor
        self._sha256 = hashlib.sha256()
        # stored compressed: the stored bytes' own sha256, and the content's sha1 (the
        # announcement's ``uncompressed`` figures, core/checksums.py)
        self._stored_sha256 = hashlib.sha256() if payload.compress else None
        self._sha1 = hashlib.sha1() if payload.compress else None  # noqa: S324 - a checksum
        self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31) if payload.compress else None
        self._head = bytearray()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._inflight: asyncio.Future[None] | None = None
        self._closed = False
        self._committed = False

    @property
    def content_sha256(self) -> str:
        """sha256 of the content written so far, before any compression: of the whole
        payload once ``commit`` returned."""
        return self._sha256.hexdigest()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if len(self._head) < SNIFF_BYTES:
            self._head += data[: SNIFF_BYTES - len(self._head)]
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BLOCK:
            await self._flush_block()

    def _take_pending(self) -> bytes:
        block = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        return block

    async def _flush_block(self) -> None:
        block = self._take_pending()
        if self._inflight is not None:
            await self._inflight
        loop = asyncio.get_running_loop()
        self._inflight = asyncio.wrap_future(self._executor.submit(self._write_block, block), loop=loop)

    def _write_block(self, block: bytes) -> None:
        self._sha256.update(block)
        if self._sha1 is not None:
            self._sha1.update(block)
        if self._gzip is not None:
            block = self._gzip.compress(block)
        self._write_stored(block)

    def _write_stored(self, block: bytes) -> None:
        if not block:
            return
        if self._stored_sha256 is not None:
            self._stored_sha256.update(block)
        self.stored_size += len(block)
        self._object().write(block)

    def _object(self) -> ObjectWriter:
        """The object being written, opened on first use (in a pool thread)."""
        if self._writer is None:
            self._writer = self._open_writer()
        return self._writer

    def _write_last_and_finish(self, block: bytes) -> None:
        self._write_block(block)
        self._finish()
        # libmagic takes milliseconds on text: sniff here, off the event loop
        self.mime = sniff(bytes(self._head))

    def _finish(self) -> None:
        if self._gzip is not None:
            self._write_stored(self._gzip.flush())
        self._object().commit()

    async def drain(self) -> None:
        """Write what is gathered and wait for it: ``content_sha256`` then covers every
        byte written so far (a caller that needs the digest before ``commit``)."""
        if self._pending:
            await self._flush_block()
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    def store_whole(self, data: bytes) -> None:
        """Write ``data`` as the whole payload and make the object durable, blocking: for
        a caller in a pool thread already, whose payload is in memory (a small pulled
        file, hashed and looked up in the same trip to the pool, pull/ingest.py).
        ``commit`` then only returns the checksums."""
        assert not self.size and not self._closed, "store_whole takes the whole payload"
        self.size = len(data)
        self._head += data[:SNIFF_BYTES]
        self._write_last_and_finish(data)
        self._closed = self._committed = True

    async def commit(self) -> dict[str, str]:
        """Write what is left and make the object durable. Returns the content's
        ``sha256`` and, when stored compressed, ``stored_sha256`` and the content's
        ``sha1``."""
        if not self._committed:
            block = self._take_pending()
            if self._inflight is not None:
                await self._inflight
            loop = asyncio.get_running_loop()
            # one executor round-trip for the last block and the commit (a small upload
            # has only this one)
            await loop.run_in_executor(self._executor, self._write_last_and_finish, block)
            self._closed = self._committed = True
        checksums = {"sha256": self._sha256.hexdigest()}
        if self._stored_sha256 is not None and self._sha1 is not None:
            checksums["stored_sha256"] = self._stored_sha256.hexdigest()
            checksums["sha1"] = self._sha1.hexdigest()
        return checksums

    async def abort(self) -> None:
        """Remove whatever was written; safe to call at any point, and twice."""
        if self._closed:
            return
        self._closed = True
        if self._inflight is not None:
            try:
                await self._inflight
            except Exception:  # noqa: BLE001 - the write that failed is why we abort
                pass
        if self._writer is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._writer.abort)


class Ingestor:
    """Opens payload writers and records finished payloads (upload row, timeline, outbox)."""

    def __init__(self, settings: Settings, storage: Storage, database: Database,
                 executor: Executor, on_recorded: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.storage = storage
        self.database = database
        self.executor = executor
        self._on_recorded = on_recorded
        self._committer = GroupCommitter(database)

    def close(self) -> None:
        self._committer.close()

    def open(self, payload: Payload) -> PayloadWriter:
        """A writer for ``payload``; the object itself is opened by its first write."""
        key = new_object_key()
        open_writer = functools.partial(self.storage.open_writer, "quarantine", key)
        return PayloadWriter(payload, open_writer, key, self.executor)

    async def finish(
        self,
        writer: PayloadWriter,
        messages: Callable[[dict[str, Any]], Sequence[OutboxItem]] | None = None,
    ) -> dict[str, Any]:
        """Commit the object, then record the upload and its announcement durably, with
        any further ``messages(announcement)`` in the same transaction (the watcher's
        asset-transfer events). Returns the announcement. On failure the stored object is
        removed again; the record fails (``RecordTooLate``) unless it commits within
        ``INGEST_DEADLINE`` of the writer's opening, so that clean-up can tell an
        abandoned object from one whose record is still coming (core/cleanup.py)."""
        checksums = await writer.commit()
        announcement = self._announcement(writer, checksums)
        row = self._row(writer, checksums)
        try:
            await self._record(writer.payload, row, announcement, messages,
                               writer.opened + self.settings.ingest_deadline)
        except Exception:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self.executor, self.storage.delete, "quarantine", writer.object_key
            )
            raise
        return announcement

    async def record_stored(
        self,
        payload: Payload,
        object_key: str,
        size: int,
        sha256: str,
        mime: str | None,
        messages: Callable[[dict[str, Any]], Sequence[OutboxItem]] | None = None,
    ) -> dict[str, Any]:
        """``finish`` for a payload whose object is in quarantine already, complete and
        durable (a download that checkpointed its resumable object, pull/): record it and
        its announcement. The object stays on failure: its owner (whose row names it)
        retries or removes it, and the general clean-up leaves owned keys alone, so there
        is no deadline."""
        announcement = self.announcement(payload, object_key, size, {"sha256": sha256}, mime)
        announcement.update(payload.extra)
        row = {**self._row_of(payload, object_key, size, mime), "sha256": sha256}
        await self._record(payload, row, announcement, messages, None)
        return announcement

    async def _record(self, payload: Payload, row: dict[str, Any], announcement: dict[str, Any],
                      messages: Callable[[dict[str, Any]], Sequence[OutboxItem]] | None,
                      deadline: float | None) -> None:
        item = OutboxItem(service_topic(payload.service), payload.request_id, announcement,
                          request_id=payload.request_id, on_sent_status="announced")
        # a caller's messages may refuse the payload (the watcher: the bytes written are
        # not the ones it hashed)
        items = [item, *(messages(announcement) if messages else [])]
        await self._committer.record(row, payload.received_at, items, deadline)
        metrics.UPLOAD_BYTES.labels(payload.service).inc(row["size"])
        metrics.STAGE_SECONDS.labels("store").observe(
            (utcnow() - payload.received_at).total_seconds())
        logger.info("request_id=%s stored %d bytes for %s (sha256 %s)", payload.request_id,
                    row["size"], payload.service, row["sha256"])
        self._on_recorded()

    def _announcement(self, writer: PayloadWriter, checksums: dict[str, str]) -> dict[str, Any]:
        payload = writer.payload
        message = self.announcement(payload, writer.object_key, writer.size,
                                    {"sha256": checksums["sha256"]}, writer.mime)
        if payload.compress:
            message.update(describe_stored(
                writer.size, checksums["sha256"], "gzip", writer.stored_size,
                checksums["stored_sha256"], checksums["sha1"]))
        message.update(payload.extra)
        return message

    def announcement(self, payload: Payload, object_key: str, size: int,
                     checksums: dict[str, str], mime: str | None) -> dict[str, Any]:
        """The announcement of a payload stored in quarantine under ``object_key`` (every
        intake's: multipart, watcher, tus)."""
        url = self.storage.signed_url("quarantine", object_key, self.settings.url_expiry,
                                      served_name(payload.filename,
                                                  "gzip" if payload.compress else None))
        return {
            "request_id": payload.request_id,
            "payload_id": payload.request_id,
            "service": payload.service,
            "category": payload.category,
            "content_type": payload.content_type,
            "size": size,
            "url": url,
            "account": payload.account,
            "org_id": payload.org_id,
            "principal": payload.principal,
            "b64_identity": payload.b64_identity,
            "metadata": payload.metadata,
            "checksums": checksums,
            "mime": mime,
            "filename": payload.filename,
            "timestamp": payload.received_at.isoformat(),
            "callback_url": callback_url(self.settings.public_url, self.settings.url_signing_key,
                                         payload.request_id, self.settings.url_expiry),
        }

    def _row(self, writer: PayloadWriter, checksums: dict[str, str]) -> dict[str, Any]:
        payload = writer.payload
        return {
            **self._row_of(payload, writer.object_key, writer.size, writer.mime),
            "sha256": checksums["sha256"],
            "compression": "gzip" if payload.compress else None,
            "stored_size": writer.stored_size if payload.compress else None,
            "stored_sha256": checksums.get("stored_sha256"),
            "sha1": checksums.get("sha1"),
        }

    @staticmethod
    def _row_of(payload: Payload, object_key: str, size: int, mime: str | None,
                ) -> dict[str, Any]:
        return {
            "request_id": payload.request_id,
            "service": payload.service,
            "category": payload.category,
            "content_type": payload.content_type,
            "filename": payload.filename,
            "size": size,
            "mime": mime,
            "account": payload.account,
            "org_id": payload.org_id,
            "principal": payload.principal,
            "b64_identity": payload.b64_identity,
            "metadata": json.dumps(payload.metadata),
            "source": payload.source,
            "compression": None,
            "stored_size": None,
            "stored_sha256": None,
            "sha1": None,
            "object_key": object_key,
            "bucket": "quarantine",
            **({"note": payload.note} if payload.note else {}),
        }
