"""Resumable ingest: payloads whose bytes arrive over several requests, possibly through
several gateways (the core of the tus intake; tus/ speaks the protocol).

An upload is a ``tus_uploads`` row (db/tus.py) and an incomplete object in quarantine
(``storage.ResumableStorage``). Whoever writes holds the row's lease (a database lease a
dead holder loses after ``TUS_LEASE_SECONDS``, default 30, renewed by a live one every
third of it). A ``Session`` appends blocks through the storage driver while hashing
them, and a checkpoint makes them durable in storage *before* it records the new offset
with the storage state and the hash state: an offset the database holds (and so any
offset a client was told) is always backed by stored bytes; bytes past it are dropped by
the next writer.

The whole-payload sha256 (and sha1 for ``assets`` uploads, whose asset-transfer events
carry it) is computed as the bytes arrive, with hashers whose state is serialised at each
checkpoint (core/midstate.py: OpenSSL's, hashing without the GIL, saved in ``rehashes``'
state format, about 100 bytes each), so that any gateway continues it after a restart or
a switch without reading the prefix again;
bench/tus_hash_state.py measures the alternative (re-reading the stored prefix) and S3
could not even offer it (an unfinished multipart upload's parts cannot be read back).

When the last byte is checkpointed the row becomes ``complete`` and ``finish`` records the
payload exactly as the multipart path does (announcement in the outbox, timeline, status
messages); a gateway that dies in between leaves it ``complete``, and the sweeper (or the
next request on it) finishes it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import struct
import time
import uuid
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any, Callable

from bus.topics import service_topic
from core import metrics, midstate
from core.assets import asset_events
from core.ingest import BLOCK, SNIFF_BYTES, Ingestor, Payload
from core.mime import sniff
from db import Database, OutboxItem, as_utc, utcnow
from storage import RESUMABLE_PREFIX, ResumableStorage, ResumableWriter, Storage

logger = logging.getLogger(__name__)

RENEW_FRACTION = 1 / 3  # a writer renews its lease once this much of it has passed
ASSET_SERVICE = "assets"


class LeaseLost(Exception):
    """Another request holds the upload now: this one must not record anything."""


def held(row: dict[str, Any]) -> bool:
    """Whether a request holds the upload's lease now."""
    return row["lease_owner"] is not None and as_utc(row["lease_until"]) > utcnow()


class HashState:
    """The payload's running sha256 (and sha1), serialisable between requests."""

    def __init__(self, state: bytes | None, sha1: bool) -> None:
        if state:
            sizes = struct.unpack_from(">HH", state)
            first = state[4:4 + sizes[0]]
            second = state[4 + sizes[0]:4 + sizes[0] + sizes[1]]
            self.sha256 = midstate.load("sha256", first)
            self.sha1 = midstate.load("sha1", second) if sizes[1] else None
        else:
            self.sha256 = midstate.new("sha256")
            self.sha1 = midstate.new("sha1") if sha1 else None

    def update(self, block: bytes) -> None:
        self.sha256.update(block)
        if self.sha1 is not None:
            self.sha1.update(block)

    def dump(self) -> bytes:
        first = self.sha256.serialize()
        second = self.sha1.serialize() if self.sha1 is not None else b""
        return bytes(struct.pack(">HH", len(first), len(second)) + first + second)

    def digests(self) -> dict[str, str]:
        found = {"sha256": self.sha256.finalize()}
        if self.sha1 is not None:
            found["sha1"] = self.sha1.finalize()
        return found


def payload_json(payload: Payload) -> str:
    fields = asdict(payload)
    fields["received_at"] = payload.received_at.isoformat()
    return json.dumps(fields)


def payload_from(text: str) -> Payload:
    import datetime as dt

    fields = json.loads(text)
    fields["received_at"] = dt.datetime.fromisoformat(fields["received_at"])
    return Payload(**fields)


class Lease:
    """A held lease, renewed as the writer goes (blocking; called from pool threads)."""

    def __init__(self, database: Database, tus_id: str, token: str, ttl: float) -> None:
        self.database = database
        self.tus_id = tus_id
        self.token = token
        self.ttl = ttl
        self.renewed = time.monotonic()

    @property
    def due(self) -> bool:
        return time.monotonic() - self.renewed >= self.ttl * RENEW_FRACTION

    def check(self) -> None:
        """Renew when due; ``LeaseLost`` when another request took it meanwhile."""
        if not self.due:
            return
        started = time.monotonic()
        if not self.database.renew_tus(self.tus_id, self.token, self.ttl):
            raise LeaseLost(f"upload {self.tus_id} was taken over")
        self.renewed = started


class Session:
    """Appends to one upload under a held lease. Blocking, one thread at a time."""

    def __init__(self, resumable: Resumable, row: dict[str, Any], token: str,
                 checksum: Any | None = None) -> None:
        self.resumable = resumable
        self.row = row
        self.lease = Lease(resumable.database, row["id"], token, resumable.lease_seconds)
        self.before = row["upload_offset"]
        self.length: int | None = row["upload_length"]
        self.checksum = checksum  # a hashlib object for this request's Upload-Checksum
        payload = payload_from(row["payload"]) if row["kind"] != "partial" else None
        self.hashes = None if payload is None else HashState(
            row["hash_state"], sha1=payload.service == ASSET_SERVICE)
        self.head = bytes(row["head"] or b"")
        hint = self.length if self.length is not None else resumable.settings.max_length
        self.writer: ResumableWriter = resumable.storage.open_resumable(
            "quarantine", row["object_key"], self.before, json.loads(row["storage_state"]), hint)

    @property
    def offset(self) -> int:
        return self.writer.offset

    def write(self, block: bytes) -> None:
        self.lease.check()
        if self.hashes is not None:
            self.hashes.update(block)
            if len(self.head) < SNIFF_BYTES:
                self.head += block[:SNIFF_BYTES - len(self.head)]
        if self.checksum is not None:
            self.checksum.update(block)
        self.writer.write(block)

    def checkpoint(self, release: bool) -> bool:
        """Make what was written durable and record it. True when the upload is complete
        (every byte of its known length is stored)."""
        complete = self.length is not None and self.offset == self.length
        state = self.writer.checkpoint(final=complete)
        values = {
            "upload_offset": self.offset,
            "upload_length": self.length,
            "storage_state": json.dumps(state),
            "hash_state": self.hashes.dump() if self.hashes is not None else None,
            "head": self.head,
            "state": "complete" if complete else "receiving",
            "expires_at": self.resumable.expires_at(),
        }
        ok = self.resumable.database.checkpoint_tus(
            self.row["id"], self.lease.token, self.before, values, release and not complete)
        if not ok:
            raise LeaseLost(f"upload {self.row['id']} was taken over before its checkpoint")
        self.writer.recorded()
        self.row = {**self.row, **values}
        self.before = self.offset
        return complete

    def close(self) -> None:
        self.writer.close()


class Resumable:
    """Creates, continues, finishes and ends resumable uploads (blocking methods: run
    them in the executor)."""

    def __init__(self, ingestor: Ingestor, storage: ResumableStorage,
                 on_recorded: Callable[[], None] = lambda: None) -> None:
        self.ingestor = ingestor
        self.settings = ingestor.settings
        self.storage = storage
        self.objects: Storage = ingestor.storage
        self.database: Database = ingestor.database
        self.executor: Executor = ingestor.executor
        self.lease_seconds = float(self.settings.tus_lease_seconds)
        self._on_recorded = on_recorded

    def expires_at(self) -> Any:
        import datetime as dt

        return utcnow() + dt.timedelta(seconds=self.settings.tus_expiry)

    def create(self, kind: str, length: int | None, payload: Payload | None,
               upload_metadata: str | None, concat: str | None, account: str | None,
               org_id: str | None, lease_token: str | None) -> dict[str, Any]:
        """Record a new upload (``kind``: single, partial or final), leased to
        ``lease_token`` when given; a single or final one gets its ``uploads`` row
        (status ``created``) at once. Returns its row. A used request id raises
        ``IntegrityError``."""
        import datetime as dt

        now = utcnow()
        row = {
            "id": secrets.token_hex(16),
            "request_id": payload.request_id if payload else None,
            "kind": kind, "state": "receiving", "upload_length": length, "upload_offset": 0,
            "upload_metadata": upload_metadata, "concat": concat,
            "payload": payload_json(payload) if payload else "{}",
            "account": account, "org_id": org_id,
            "object_key": RESUMABLE_PREFIX + uuid.uuid4().hex, "storage_state": "{}",
            "hash_state": None, "head": b"",
            "lease_owner": lease_token,
            "lease_until": (now + dt.timedelta(seconds=self.lease_seconds)
                            if lease_token else None),
            "expires_at": self.expires_at(),
        }
        upload = None
        if payload is not None:
            upload = {
                "request_id": payload.request_id, "service": payload.service,
                "category": payload.category, "content_type": payload.content_type,
                "filename": payload.filename, "size": length or 0, "sha256": "",
                "mime": None, "account": payload.account, "org_id": payload.org_id,
                "principal": payload.principal, "b64_identity": payload.b64_identity,
                "metadata": json.dumps(payload.metadata), "source": "tus",
                "compression": None, "object_key": row["object_key"], "bucket": "quarantine",
            }
        self.database.create_tus(row, upload)
        logger.info("request_id=%s tus upload %s created (%s, %s bytes)",
                    row["request_id"] or "-", row["id"], kind,
                    "deferred" if length is None else length)
        return {**row, "created_at": now, "updated_at": now}

    def acquire(self, tus_id: str, token: str, states: tuple[str, ...] = ("receiving",
                                                                         "complete")
                ) -> dict[str, Any] | None:
        return self.database.acquire_tus(tus_id, token, self.lease_seconds, states)

    def release(self, tus_id: str, token: str) -> None:
        self.database.release_tus(tus_id, token)

    def lease_partials(self, final: dict[str, Any], token: str) -> list[dict[str, Any]] | None:
        """Lease every partial upload of ``final`` (complete ones, in order) to ``token``;
        None, holding none of them, when one is missing, unfinished or held."""
        taken: list[dict[str, Any]] = []
        for partial_id in json.loads(final["concat"])["partials"]:
            row = self.acquire(partial_id, token, ("done",))
            if row is not None:
                taken.append(row)
            if row is None or row["kind"] != "partial":
                for held in taken:
                    self.release(held["id"], token)
                return None
        return taken

    def storage_reader(self, key: str) -> Any:
        return self.objects.open_reader("quarantine", key)

    def open(self, row: dict[str, Any], token: str, checksum: Any | None = None) -> Session:
        return Session(self, row, token, checksum)

    def finish(self, row: dict[str, Any], token: str) -> bool:
        """Record a complete upload (its row ``complete``, its lease ``token``'s): make
        the object visible, then, for a single or final upload, its announcement and
        timeline in one transaction. False when another request finished it."""
        size = int(row["upload_length"])
        self.storage.complete_resumable("quarantine", row["object_key"],
                                        json.loads(row["storage_state"]), size)
        if row["kind"] == "partial":
            return self.database.finish_tus(row["id"], token, None, [])
        payload = payload_from(row["payload"])
        hashes = HashState(row["hash_state"], sha1=payload.service == ASSET_SERVICE)
        checksums = hashes.digests()
        mime = sniff(bytes(row["head"] or b""))
        announcement = self.ingestor.announcement(payload, row["object_key"], size,
                                                  checksums, mime)
        announcement["source"] = "tus"
        rid = payload.request_id
        items = [OutboxItem(service_topic(payload.service), rid, announcement, request_id=rid,
                            on_sent_status="announced")]
        if "sha1" in checksums:
            name = payload.filename or rid
            items += asset_events(name, checksums["sha1"], rid)
        upload = {"request_id": rid, "size": size, "sha256": checksums["sha256"], "mime": mime}
        if not self.database.finish_tus(row["id"], token, upload, items):
            return False
        metrics.UPLOAD_BYTES.labels(payload.service).inc(size)
        metrics.UPLOADS.labels(payload.service, "accepted").inc()
        logger.info("request_id=%s stored %d bytes for %s through tus (sha256 %s)", rid, size,
                    payload.service, checksums["sha256"])
        self._on_recorded()
        return True

    def end(self, row: dict[str, Any], token: str, state: str, message: str) -> bool:
        """Terminate or expire an upload under its lease: its stored bytes go first."""
        if row["state"] == "done":  # a completed partial: its object is complete
            self.objects.delete("quarantine", row["object_key"])
        else:
            self.storage.discard_resumable("quarantine", row["object_key"])
        ended = self.database.end_tus(row["id"], token, state, message)
        if ended:
            logger.info("request_id=%s tus upload %s %s: %s", row["request_id"] or "-",
                        row["id"], state, message)
        return ended


class SessionPipe:
    """Feeds a ``Session`` from the event loop: network chunks are gathered into blocks
    of ``BLOCK`` bytes and written on the executor, one block in flight while the next
    is gathered, so a slow disk or S3 slows the client (backpressure)."""

    def __init__(self, session: Session, executor: Executor) -> None:
        self.session = session
        self.executor = executor
        self.received = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._inflight: asyncio.Future[None] | None = None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BLOCK:
            await self._submit()

    async def _submit(self) -> None:
        block = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        if self._inflight is not None:
            await self._inflight
        loop = asyncio.get_running_loop()
        self._inflight = asyncio.wrap_future(
            self.executor.submit(self.session.write, block), loop=loop)

    async def drain(self) -> None:
        """Write what is gathered and wait for every write."""
        if self._pending:
            await self._submit()
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def settle(self) -> None:
        """Wait for the write in flight, ignoring its failure (the request is being
        abandoned); what was gathered but not written is dropped."""
        self._pending, self._pending_bytes = [], 0
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            try:
                await inflight
            except Exception:  # noqa: BLE001 - the caller discards or checkpoints what is stored
                pass
