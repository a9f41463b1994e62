"""One complete file, from ``WATCH_DIR`` to ``Processed/`` (or ``Failed/``).

1. Its name is checked and it is opened without following links (``watcher.files``): a
   name that is not UTF-8, holds control characters or is too long, a link, FIFO, socket,
   device or hard link, and a file we may not read go to ``Failed/`` (under a safe name,
   the original in ``<name>.error.json``); one that cannot even be moved there is left
   alone and logged once (``ignored``).
2. Its rule (``watcher.rules``) and processing steps (``core.steps``), reading the
   opened file, into a private work directory; a file they cannot handle goes to
   ``Failed/`` with ``<name>.error.json``.
3. Per payload: sha256 and sha1 of the (uncompressed) content, and a request id derived
   from its name and sha256. The file is read from the descriptor opened in 1, and
   ``fstat`` after the reading must show the size, mtime and ctime it had when opened;
   otherwise it was rewritten meanwhile (``changed``): nothing is stored, and it is taken
   again after another quiet period. That id already recorded (with the same name and content):
   a duplicate (a restart, a crash between storing and moving, the same content dropped
   again), not ingested again. The upload's primary key makes this exact, even when two
   watchers race. A payload of up to one block (1 MiB) is not looked up first: its insert
   fails on the key when it is a duplicate, and the copy it stored is removed again, which
   saves a query per file in a burst; after such a duplicate every payload is looked up
   first for ``LOOK_UP_SECONDS`` (60), so that a folder dropped twice is not stored twice.
4. The same ingest path as an HTTP upload, whose transaction records the announcement,
   ``sdc_asset_transfer_file_created`` and ``sdc_asset_transfer_file_uploaded``, in that
   order: both are durable exactly when the payload is, and the relay sends created
   first. A payload of up to one block is stored from the very bytes that were hashed; a
   larger one is read again, from the same descriptor, while it is stored, and the
   ingest path's sha256 of what was written must be the one its request id, sha1 and
   events came from, or the stored object is removed before anything is recorded and
   the file is ``changed``. So the stored bytes, the request id, the checksums and the
   asset events always describe one version (no event names a version that was not
   stored: that is why created is no longer sent ahead of a large file's storing).
5. Only then the file moves to ``Processed/``, if it is still the version that was read:
   nothing leaves ``WATCH_DIR`` before it is durable elsewhere. A file that changed
   meanwhile stays where it is, for another round.

Storage, bus or database trouble (``TRANSIENT``) leaves the file in place to be retried.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.exc import DBAPIError, IntegrityError

from bus import BusUnavailable
from core import metrics
from core.assets import asset_events
from core.ingest import BLOCK, Payload, PayloadWriter
from core.services import Services
from core.steps import Decryptor, Limits, Prepared, StepError, prepare
from db import OutboxItem
from storage import StorageUnavailable
from watcher import files
from watcher.files import Source
from watcher.rules import Rule, match

logger = logging.getLogger(__name__)

PROCESSED = "Processed"
FAILED = "Failed"
TRANSIENT = (StorageUnavailable, BusUnavailable, DBAPIError, OSError)
LOOK_UP_SECONDS = 60.0


class Changed(Exception):
    """The file was rewritten while it was read: nothing of it is recorded."""


@dataclass(frozen=True)
class Digest:
    sha256: str
    sha1: str
    size: int
    data: bytes | None  # the content itself when it is at most one block


def _reader(path: Path | BinaryIO) -> BinaryIO:
    if isinstance(path, Path):
        return open(path, "rb")
    path.seek(0)
    return path


def digest(path: Path | BinaryIO) -> Digest:
    """Checksums of a work file, or of the dropped file from its start (left open)."""
    sha256, sha1, size, head = hashlib.sha256(), hashlib.sha1(), 0, b""  # noqa: S324
    handle = _reader(path)
    try:
        while block := handle.read(BLOCK):
            sha256.update(block)
            sha1.update(block)
            head = block if size == 0 else b""
            size += len(block)
    finally:
        if handle is not path:
            handle.close()
    return Digest(sha256.hexdigest(), sha1.hexdigest(), size, head if len(head) == size else None)


def watcher_request_id(name: str, sha256: str) -> str:
    return hashlib.sha256(f"watcher\0{name}\0{sha256}".encode()).hexdigest()[:32]


@dataclass
class Examined:
    """A file after its steps: the opened file, its work directory, and per payload its
    digest and the upload already recorded under its request id (a duplicate), if any."""

    source: Source
    work: Path | None
    items: list[tuple[Prepared, Digest, dict[str, Any] | None]]

    def close(self) -> None:
        self.source.close()
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)


class Pipeline:
    def __init__(self, services: Services, rules: tuple[Rule, ...], limits: Limits,
                 decryptor: Decryptor | None) -> None:
        self.services = services
        self.settings = services.settings
        self.root = services.settings.watch_dir or Path(".")
        self.work = services.settings.workdir / "watcher-work"
        self.rules = rules
        self.limits = limits
        self.decryptor = decryptor
        self._look_up_until = 0.0

    async def _run(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor, func, *args)

    async def process(self, path: Path) -> str:
        """Returns the outcome: ingested, duplicate, failed, ignored, changed, gone, or
        retry."""
        relative = path.relative_to(self.root).as_posix()
        examined: Examined | None = None
        try:
            files.check_name(relative)
            rule = match(self.rules, relative)
            if rule is None:
                raise StepError("no_rule", "no WATCH_RULES entry matches")
            examined = await self._run(self._examine, relative, rule)
            if examined is None:
                return "gone"
            return await self._process(relative, rule, examined)
        except StepError as exc:
            return await self.fail(relative, exc)
        except Changed:
            logger.warning("path=%s changed while it was read; nothing of it is recorded, it "
                           "is taken again after a quiet period", relative)
            return "changed"
        except TRANSIENT as exc:
            if await self._run(files.current, self.root, relative) is None:
                return "gone"
            logger.warning("path=%s not ingested now, will retry: %s", relative, exc)
            return "retry"
        finally:
            if examined is not None:
                await self._run(examined.close)

    def _examine(self, relative: str, rule: Rule) -> Examined | None:
        """Open, steps, digests and the duplicate look-up, in one trip to a worker thread."""
        try:
            source = files.open_source(self.root, relative)
        except PermissionError as exc:
            raise StepError("unreadable", f"may not be read: {exc.strerror}") from exc
        if source is None:
            return None
        examined = Examined(source, None, [])
        try:
            if not rule.steps and source.size > self.limits.max_bytes:
                raise StepError("too_large", f"larger than MAX_LENGTH ({self.limits.max_bytes} bytes)")
            if rule.steps:
                self.work.mkdir(parents=True, exist_ok=True)
                examined.work = Path(tempfile.mkdtemp(dir=self.work))
            prepared = prepare(source.handle, relative, rule.steps, examined.work or self.work,
                               self.limits, self.decryptor)
            examined.items = [self._look_up(item) for item in prepared]
            if not source.unchanged():
                raise Changed(relative)
            return examined
        except BaseException:
            examined.close()
            raise

    def _look_up(self, item: Prepared) -> tuple[Prepared, Digest, dict[str, Any] | None]:
        found = digest(item.path)
        if found.size > self.limits.max_bytes:
            raise StepError("too_large", f"{item.name} is larger than MAX_LENGTH")
        if found.data is not None and time.monotonic() > self._look_up_until:
            return item, found, None  # optimistic: the primary key catches a duplicate
        return item, found, self._known(watcher_request_id(item.name, found.sha256), item.name,
                                        found.sha256)

    def _known(self, request_id: str, name: str, sha256: str) -> dict[str, Any] | None:
        """The upload already recorded under ``request_id``, if any."""
        row = self.services.database.get_upload(request_id)
        if row is not None and (row["source"], row["filename"], row["sha256"]) != (
                "watcher", name, sha256):
            raise StepError("id_conflict", f"request id {request_id} is taken by another upload")
        return row

    async def _process(self, relative: str, rule: Rule, examined: Examined) -> str:
        outcomes = []
        for item, found, row in examined.items:
            if row is not None:
                logger.info("request_id=%s path=%s duplicate: this content was already ingested "
                            "under this name (status %s)", row["request_id"], item.name,
                            row["status"])
                outcomes.append("duplicate")
            else:
                outcomes.append(await self._ingest(item, found, rule, relative))
        target = await self._run(files.move, self.root, relative, PROCESSED, None,
                                 examined.source.before)
        if target is None:
            logger.warning("path=%s changed while it was ingested; it stays for another round",
                           relative)
            return "changed"
        outcome = "ingested" if "ingested" in outcomes else "duplicate"
        logger.info("path=%s %s, moved to %s", relative, outcome, target)
        return outcome

    async def _ingest(self, item: Prepared, found: Digest, rule: Rule, relative: str) -> str:
        request_id = watcher_request_id(item.name, found.sha256)
        events = asset_events(item.name, found.sha1, request_id)
        payload = Payload(
            request_id=request_id, service=rule.service, category=rule.category,
            content_type=rule.content_type, filename=item.name, source="watcher",
            compress=rule.compress, extra={"source": "watcher"},
            metadata={"watch_path": relative, "steps": list(item.steps)},
        )
        try:
            await self._store(payload, item.path, found, events)
        except IntegrityError:
            self._look_up_until = time.monotonic() + LOOK_UP_SECONDS
            if await self._run(self._known, request_id, item.name, found.sha256) is None:
                raise
            logger.info("request_id=%s path=%s duplicate: this content was already ingested "
                        "under this name (its stored copy is removed again)", request_id,
                        item.name)
            return "duplicate"
        return "ingested"

    async def _store(self, payload: Payload, path: Path | BinaryIO, found: Digest,
                     events: list[OutboxItem]) -> dict[str, Any]:
        ingestor = self.services.ingestor
        writer = ingestor.open(payload)
        try:
            if found.data is not None:
                await writer.write(found.data)
            else:
                await self._copy(path, writer)
        except BaseException:
            await writer.abort()
            raise

        def same_version(_announcement: dict[str, Any]) -> list[OutboxItem]:
            """Recorded only if what was written is what was hashed (else the ingest path
            removes the stored object again)."""
            if writer.content_sha256 != found.sha256:
                raise Changed(payload.filename)
            return events

        return await ingestor.finish(writer, messages=same_version)

    async def _copy(self, path: Path | BinaryIO, writer: PayloadWriter) -> None:
        handle = await self._run(_reader, path)
        try:
            while block := await self._run(handle.read, BLOCK):
                await writer.write(block)
        finally:
            if handle is not path:
                await self._run(handle.close)

    async def fail(self, relative: str, error: StepError) -> str:
        """Move the file to ``Failed/`` (under a safe name) beside ``<name>.error.json``
        saying why; one that cannot be moved is left alone, logged once (``ignored``)."""
        safe = files.safe_name(relative)
        report: dict[str, Any] = {"file": files.display(relative), "error": error.code,
                                  "message": error.message,
                                  "at": dt.datetime.now(dt.UTC).isoformat()}
        if safe != relative:
            report.update(original_hex=os.fsencode(relative).hex(), stored_as=safe)
        sidecar = (json.dumps(report, indent=2) + "\n").encode()
        try:
            target = await self._run(files.move, self.root, relative, FAILED, safe, None, sidecar)
        except FileNotFoundError:
            return "gone"
        except (OSError, StepError) as exc:
            logger.error("path=%s cannot be ingested (%s: %s) nor moved to %s (%s); left "
                         "alone until it changes", relative, error.code, error.message, FAILED,
                         exc)
            return "ignored"
        metrics.WATCHER_FAILURES.labels(error.code).inc()
        logger.warning("path=%s failed (%s: %s), moved to %s", relative, error.code,
                       error.message, target)
        return "failed"
