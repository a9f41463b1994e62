"""From a complete download to recorded uploads: the provider's steps (``core.steps``:
decrypt, untar, gunzip), then per payload the ingest path HTTP uploads take
(``core.ingest``: quarantine, sha256, the announcement in the outbox).

A payload's request id is derived from the provider and its sha256, so the same content
from the same provider (a file touched, renamed, published twice, or a job repeated
after a crash) is recorded as a ``duplicate`` and not stored twice; the upload's primary
key makes that exact. Its timeline's ``received`` entry names the provider and the remote
path, which its metadata and announcement carry too (``provider``, ``remote_path``).
Payloads routed to the ``assets`` service also get ``sdc_asset_transfer_file_created``
and ``_uploaded`` (with their sha1) on ``platform.asset-transfer`` in the same
transaction, as the watcher's do.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy.exc import IntegrityError

from core.assets import asset_events
from core.ingest import BLOCK, Payload, PayloadWriter
from core.mime import sniff
from core.services import Services
from core.steps import Decryptor, Limits, Prepared, StepError, prepare
from pull.config import Provider
from pull.download import Downloaded
from storage import resumable

logger = logging.getLogger(__name__)

ASSETS = "assets"


@dataclass(frozen=True)
class Digest:
    sha256: str
    sha1: str
    size: int


def digest(path: Path) -> Digest:
    sha256, sha1, size = hashlib.sha256(), hashlib.sha1(), 0  # noqa: S324
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            sha256.update(block)
            sha1.update(block)
            size += len(block)
    return Digest(sha256.hexdigest(), sha1.hexdigest(), size)


def digest_bytes(data: bytes, sha1: bool) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest(),
                  hashlib.sha1(data).hexdigest() if sha1 else "", len(data))  # noqa: S324


def pull_request_id(provider: str, sha256: str) -> str:
    return hashlib.sha256(f"pull\0{provider}\0{sha256}".encode()).hexdigest()[:32]


class PullIngest:
    def __init__(self, services: Services, provider: Provider, work: Path) -> None:
        settings = services.settings
        self.services = services
        self.provider = provider
        self.work = work
        self.limits = Limits(settings.max_length, settings.watch_max_ratio,
                             settings.watch_max_members)
        self.decryptor = (Decryptor(provider.gpg_home, provider.gpg_passphrase)
                          if "decrypt" in provider.steps else None)

    @property
    def executor(self) -> Executor:
        return self.services.executor

    async def _run(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    def needs_sha1(self) -> bool:
        """Whether the download should hash sha1 too (its bytes are the payload's)."""
        return not self.provider.steps and self.provider.service == ASSETS

    async def ingest(self, remote_path: str, downloaded: Downloaded) -> tuple[str, list[str]]:
        """Returns ``ingested`` (at least one payload stored) or ``duplicate``, and the
        payloads' request ids. ``StepError`` when the file cannot be processed."""
        path = downloaded.path
        assert path is not None  # an incomplete file's download
        if self.provider.steps:
            return await self._ingest_steps(remote_path, path)
        self._check_size(downloaded.size)
        if downloaded.sha256 is None:
            downloaded = await self.hashed(downloaded)
        assert downloaded.sha256 is not None
        found = Digest(downloaded.sha256, downloaded.sha1 or "", downloaded.size)
        return await self._ingest_items(remote_path, [(Prepared(remote_path, path), found)])

    async def hashed(self, downloaded: Downloaded) -> Downloaded:
        """A download not hashed as it arrived (its stream was given up), hashed now."""
        assert downloaded.path is not None
        found = await self._run(digest, downloaded.path)
        return replace(downloaded, sha256=found.sha256, sha1=found.sha1)

    async def ingest_data(self, remote_path: str, data: bytes) -> tuple[str, list[str], str]:
        """``ingest`` for a small file fetched whole into memory (``fetch_whole``): no
        file of its own. Without steps, one trip to the pool hashes it, looks its request
        id up and stores it in quarantine (``_store_whole``): three trips each way cost
        the event loop and the pool more than the work itself at a thousand files.
        Returns the file's sha256 too."""
        if self.provider.steps:
            found = await self._run(digest_bytes, data, False)
            outcome, request_ids = await self._ingest_steps(remote_path, data)
            return outcome, request_ids, found.sha256
        self._check_size(len(data))
        found, known, writer = await self._run(self._store_whole, remote_path, data)
        request_id = pull_request_id(self.provider.name, found.sha256)
        if writer is None:
            self._log_known(request_id, remote_path, known)
            return "duplicate", [request_id], found.sha256
        return (await self._record(writer, found, remote_path, remote_path), [request_id],
                found.sha256)

    def _store_whole(self, remote_path: str, data: bytes,
                     ) -> tuple[Digest, dict[str, Any] | None, PayloadWriter | None]:
        """In a pool thread: the digest, the upload already recorded with this content
        (then no writer), or a writer holding the payload durably stored."""
        found = digest_bytes(data, self.needs_sha1())
        request_id = pull_request_id(self.provider.name, found.sha256)
        known = self.services.database.get_upload(request_id)
        if known is not None:
            return found, known, None
        writer = self.services.ingestor.open(self._payload(remote_path, (), request_id,
                                                           remote_path))
        writer.store_whole(data)  # a failed store removes its temporary file itself
        return found, None, writer

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_bytes:
            raise StepError("too_large", f"larger than MAX_LENGTH ({self.limits.max_bytes})")

    async def _ingest_steps(self, remote_path: str, source: Path | bytes,
                            ) -> tuple[str, list[str]]:
        work = await self._run(self._work_dir)
        try:
            items = await self._run(self._prepare, source, remote_path, work)
            return await self._ingest_items(remote_path, items)
        finally:
            await self._run(shutil.rmtree, work, True)

    async def _ingest_items(self, remote_path: str, items: list[tuple[Prepared, Digest]],
                            ) -> tuple[str, list[str]]:
        outcomes, request_ids = [], []
        for item, found in items:
            request_id = pull_request_id(self.provider.name, found.sha256)
            outcomes.append(await self._one(item, found, request_id, remote_path))
            request_ids.append(request_id)
        return ("ingested" if "ingested" in outcomes else "duplicate"), request_ids

    def _work_dir(self) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.work))

    def _prepare(self, source: Path | bytes, name: str, work: Path,
                 ) -> list[tuple[Prepared, Digest]]:
        if isinstance(source, bytes):  # the steps read files (gpg takes a descriptor)
            fetched = work / "fetched"
            fetched.write_bytes(source)
            source = fetched
        prepared = prepare(source, name, self.provider.steps, work, self.limits, self.decryptor)
        found = [(item, digest(cast(Path, item.path))) for item in prepared]
        for item, item_digest in found:
            if item_digest.size > self.limits.max_bytes:
                raise StepError("too_large", f"{item.name} is larger than MAX_LENGTH")
        return found

    async def _one(self, item: Prepared, found: Digest, request_id: str,
                   remote_path: str) -> str:
        if await self._known(request_id, item.name):
            return "duplicate"
        writer = self.services.ingestor.open(self._payload(item.name, item.steps, request_id,
                                                           remote_path))
        try:
            await self._copy(item.path, found.size, writer)
        except BaseException:
            await writer.abort()
            raise
        return await self._record(writer, found, item.name, remote_path)

    def open_stream(self, remote_path: str) -> PayloadWriter | None:
        """A payload writer the download feeds as the bytes arrive (``ingest_stream``),
        so that a large file is not read and written a second time; None when the
        provider has steps (they work on the complete file). Its request id, derived
        from the content, is set once the download is complete."""
        if self.provider.steps:
            return None
        return self.services.ingestor.open(self._payload(remote_path, (), "", remote_path))

    async def ingest_stream(self, remote_path: str, writer: PayloadWriter,
                            downloaded: Downloaded) -> tuple[str, list[str]]:
        """``ingest`` for a download that fed ``writer`` (``open_stream``) every byte."""
        assert downloaded.sha256 is not None and writer.size == downloaded.size
        self._check_size(downloaded.size)
        found = Digest(downloaded.sha256, downloaded.sha1 or "", downloaded.size)
        request_id = pull_request_id(self.provider.name, found.sha256)
        if await self._known(request_id, remote_path):
            await writer.abort()
            return "duplicate", [request_id]
        writer.payload.request_id = request_id
        return await self._record(writer, found, remote_path, remote_path), [request_id]

    async def ingest_object(self, remote_path: str, downloaded: Downloaded,
                            ) -> tuple[str, list[str]]:
        """``ingest`` for a download checkpointed whole in its quarantine object
        (``downloaded.stored``): made visible and recorded as it stands
        (``Ingestor.record_stored``), or removed when its content is known already."""
        stored = downloaded.stored
        assert stored is not None and downloaded.sha256 is not None
        self._check_size(downloaded.size)
        request_id = pull_request_id(self.provider.name, downloaded.sha256)
        if await self._known(request_id, remote_path):
            await self._run(self.discard_object, stored.key)
            return "duplicate", [request_id]
        storage = resumable(self.services.storage)
        assert storage is not None
        # idempotent: an attempt that completed it and died before its record is fine
        await self._run(storage.complete_resumable, "quarantine", stored.key, stored.storage,
                        downloaded.size)
        payload = self._payload(remote_path, (), request_id, remote_path)
        events = (asset_events(remote_path, downloaded.sha1 or "", request_id)
                  if self.provider.service == ASSETS else [])
        mime = await self._run(sniff, stored.head)
        try:
            await self.services.ingestor.record_stored(
                payload, stored.key, downloaded.size, downloaded.sha256, mime,
                messages=lambda _announcement: events)
        except IntegrityError:
            if await self._run(self.services.database.get_upload, request_id) is None:
                raise
            logger.info("request_id=%s provider=%s path=%s duplicate (stored meanwhile by "
                        "another puller)", request_id, self.provider.name, remote_path)
            await self._run(self.discard_object, stored.key)
            return "duplicate", [request_id]
        logger.info("request_id=%s provider=%s path=%s ingested (%d bytes)", request_id,
                    self.provider.name, self._full_path(remote_path), downloaded.size)
        return "ingested", [request_id]

    def discard_object(self, key: str) -> None:
        """Remove a download's quarantine object, incomplete or completed (blocking)."""
        storage = resumable(self.services.storage)
        assert storage is not None
        storage.discard_resumable("quarantine", key)
        self.services.storage.delete("quarantine", key)

    async def _known(self, request_id: str, name: str) -> bool:
        known = await self._run(self.services.database.get_upload, request_id)
        self._log_known(request_id, name, known)
        return known is not None

    def _log_known(self, request_id: str, name: str, known: dict[str, Any] | None) -> None:
        if known is not None:
            logger.info("request_id=%s provider=%s path=%s duplicate: this content was "
                        "already ingested from this provider (status %s)", request_id,
                        self.provider.name, name, known["status"])

    def _payload(self, name: str, steps: tuple[str, ...], request_id: str,
                 remote_path: str) -> Payload:
        full_path = self._full_path(remote_path)
        return Payload(
            request_id=request_id, service=self.provider.service,
            category=self.provider.category, content_type=self.provider.content_type,
            filename=name, source="pull", compress=self.provider.compress,
            metadata={"provider": self.provider.name, "remote_path": full_path,
                      "steps": list(steps)},
            extra={"source": "pull", "provider": self.provider.name, "remote_path": full_path},
            note=f"pulled from provider {self.provider.name}: {full_path}",
        )

    async def _record(self, writer: PayloadWriter, found: Digest, name: str,
                      remote_path: str) -> str:
        """Commit the stored payload and record it (``Ingestor.finish``)."""
        request_id = writer.payload.request_id
        events = (asset_events(name, found.sha1, request_id)
                  if self.provider.service == ASSETS else [])
        try:
            await self.services.ingestor.finish(writer, messages=lambda _announcement: events)
        except IntegrityError:
            if await self._run(self.services.database.get_upload, request_id) is None:
                raise
            logger.info("request_id=%s provider=%s path=%s duplicate (stored meanwhile by "
                        "another puller)", request_id, self.provider.name, name)
            return "duplicate"
        logger.info("request_id=%s provider=%s path=%s ingested (%d bytes)", request_id,
                    self.provider.name, self._full_path(remote_path), found.size)
        return "ingested"

    def _full_path(self, remote_path: str) -> str:
        directory = self.provider.directory
        return remote_path if directory == "." else f"{directory.rstrip('/')}/{remote_path}"

    async def _copy(self, source: Path | BinaryIO, size: int, writer: PayloadWriter) -> None:
        handle = await self._run(open, source, "rb") if isinstance(source, Path) else source
        try:
            if size <= BLOCK:
                await writer.write(await self._run(handle.read))
            else:
                while block := await self._run(handle.read, BLOCK):
                    await writer.write(block)
        finally:
            if isinstance(source, Path):
                await self._run(handle.close)
