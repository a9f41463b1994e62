"""One complete file, from ``WATCH_DIR`` to ``Processed/`` (or ``Failed/``).

1. Its rule (``watcher.rules``) and processing steps (``core.steps``) in a private work
   directory; a file they cannot handle goes to ``Failed/`` with ``<name>.error.json``.
2. Per payload: sha256 and sha1 of the (uncompressed) content, and a request id derived
   from its name and sha256. That id already recorded (with the same name and content):
   a duplicate (a restart, a crash between storing and moving, the same content dropped
   again), not ingested again. The upload's primary key makes this exact, even when two
   watchers race. A payload of up to one block (1 MiB) is not looked up first: its insert
   fails on the key when it is a duplicate, and the copy it stored is removed again, which
   saves a query per file in a burst; after such a duplicate every payload is looked up
   first for ``LOOK_UP_SECONDS`` (60), so that a folder dropped twice is not stored twice.
3. The same ingest path as an HTTP upload, whose transaction records the announcement,
   ``sdc_asset_transfer_file_created`` and ``sdc_asset_transfer_file_uploaded``, in that
   order: uploaded is durable exactly when the payload is, and the relay sends created
   first. A file larger than one block (1 MiB), whose storing may take a while (a slow
   link to S3), gets its created event earlier instead, in a transaction of its own as
   soon as its content is known, so that the bundler hears of it while it is stored (as
   the seed's watcher did); small files save that transaction (one write transaction per
   file is what bounds a burst on SQLite).
4. Only then the file moves to ``Processed/``: nothing leaves ``WATCH_DIR`` before it is
   durable elsewhere. A file that changed meanwhile stays where it is, for another round.

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
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError

from bus import BusUnavailable
from core import metrics
from core.assets import asset_event
from core.ingest import BLOCK, Payload, PayloadWriter
from core.services import Services
from core.steps import Decryptor, Limits, Prepared, StepError, prepare
from db import OutboxItem
from storage import StorageUnavailable
from watcher.rules import Rule, match
from watcher.tracker import Stat, stat_of

logger = logging.getLogger(__name__)

PROCESSED = "Processed"
FAILED = "Failed"
TRANSIENT = (StorageUnavailable, BusUnavailable, DBAPIError, OSError)
LOOK_UP_SECONDS = 60.0


@dataclass(frozen=True)
class Digest:
    sha256: str
    sha1: str
    size: int
    data: bytes | None  # the content itself when it is at most one block


def digest(path: Path) -> Digest:
    sha256, sha1, size, head = hashlib.sha256(), hashlib.sha1(), 0, b""  # noqa: S324
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            sha256.update(block)
            sha1.update(block)
            head = block if size == 0 else b""
            size += len(block)
    return Digest(sha256.hexdigest(), sha1.hexdigest(), size, head if len(head) == size else None)


def watcher_request_id(name: str, sha256: str) -> str:
    return hashlib.sha256(f"watcher\0{name}\0{sha256}".encode()).hexdigest()[:32]


def free_name(target: Path) -> Path:
    """``target``, or ``name-2.ext``, ``name-3.ext``... when it is taken."""
    if not target.exists():
        return target
    stem, dot, ext = target.name.partition(".")
    for n in range(2, 1_000_000):
        candidate = target.with_name(f"{stem}-{n}{dot}{ext}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(target)


@dataclass
class Examined:
    """A file after its steps: its stat before, its work directory, and per payload its
    digest and the upload already recorded under its request id (a duplicate), if any."""

    before: Stat
    work: Path | None
    items: list[tuple[Prepared, Digest, dict[str, Any] | None]]


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
        """Returns the outcome: ingested, duplicate, failed, changed, gone, or retry."""
        relative = path.relative_to(self.root).as_posix()
        rule = match(self.rules, relative)
        if rule is None:
            return await self.fail(path, relative, StepError("no_rule", "no WATCH_RULES entry matches"))
        examined: Examined | None = None
        try:
            examined = await self._run(self._examine, path, relative, rule)
            if examined is None:
                return "gone"
            return await self._process(path, relative, rule, examined)
        except StepError as exc:
            return await self.fail(path, relative, exc)
        except TRANSIENT as exc:
            if stat_of(str(path)) is None:
                return "gone"
            logger.warning("path=%s not ingested now, will retry: %s", relative, exc)
            return "retry"
        finally:
            if examined is not None and examined.work is not None:
                await self._run(shutil.rmtree, examined.work, True)

    def _examine(self, path: Path, relative: str, rule: Rule) -> Examined | None:
        """Steps, digests and the duplicate look-up, in one trip to a worker thread."""
        before = stat_of(str(path))
        if before is None:
            return None
        if not rule.steps and before[0] > self.limits.max_bytes:
            raise StepError("too_large", f"larger than MAX_LENGTH ({self.limits.max_bytes} bytes)")
        work = None
        if rule.steps:
            self.work.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(dir=self.work))
        try:
            prepared = prepare(path, relative, rule.steps, work or self.work, self.limits, self.decryptor)
            return Examined(before, work, [self._look_up(item) for item in prepared])
        except BaseException:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
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

    async def _process(self, path: Path, relative: str, rule: Rule, examined: Examined) -> str:
        outcomes = []
        for item, found, row in examined.items:
            if row is not None:
                logger.info("request_id=%s path=%s duplicate: this content was already ingested "
                            "under this name (status %s)", row["request_id"], item.name,
                            row["status"])
                outcomes.append("duplicate")
            else:
                outcomes.append(await self._ingest(item, found, rule, relative))
        target = await self._run(self._move_if_unchanged, path, relative, examined.before)
        if target is None:
            logger.warning("path=%s changed while it was ingested; it stays for another round",
                           relative)
            return "changed"
        outcome = "ingested" if "ingested" in outcomes else "duplicate"
        logger.info("path=%s %s, moved to %s", relative, outcome,
                    target.relative_to(self.root).as_posix())
        return outcome

    async def _ingest(self, item: Prepared, found: Digest, rule: Rule, relative: str) -> str:
        request_id = watcher_request_id(item.name, found.sha256)
        created = asset_event("created", item.name, found.sha1, request_id)
        uploaded = asset_event("uploaded", item.name, found.sha1, request_id)
        if found.data is None:
            # storing a large file takes a while: tell the bundler now (see the module doc)
            await self._run(self.services.database.record_messages, [created])
            self.services.relay.wake()
            events = [uploaded]
        else:
            events = [created, uploaded]
        payload = Payload(
            request_id=request_id, service=rule.service, category=rule.category,
            content_type=rule.content_type, filename=item.name, source="watcher",
            compress=rule.compress, extra={"source": "watcher"},
            metadata={"watch_path": relative, "steps": list(item.steps)},
        )
        try:
            announcement = await self._store(payload, item.path, found, events)
        except IntegrityError:
            self._look_up_until = time.monotonic() + LOOK_UP_SECONDS
            if await self._run(self._known, request_id, item.name, found.sha256) is None:
                raise
            logger.info("request_id=%s path=%s duplicate: this content was already ingested "
                        "under this name (its stored copy is removed again)", request_id,
                        item.name)
            return "duplicate"
        if announcement["checksums"]["sha256"] != found.sha256:
            logger.warning("request_id=%s path=%s content changed while it was read",
                           request_id, item.name)
        return "ingested"

    async def _store(self, payload: Payload, path: Path, found: Digest,
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
        return await ingestor.finish(writer, messages=lambda _announcement: events)  # type: ignore[no-any-return]

    async def _copy(self, path: Path, writer: PayloadWriter) -> None:
        handle = await self._run(open, path, "rb")
        try:
            while block := await self._run(handle.read, BLOCK):
                await writer.write(block)
        finally:
            await self._run(handle.close)

    def _move_if_unchanged(self, path: Path, relative: str, before: Stat) -> Path | None:
        if stat_of(str(path)) != before:
            return None
        return self._move(path, relative, PROCESSED)

    def _move(self, path: Path, relative: str, folder: str) -> Path:
        target = free_name(self.root / folder / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
        return target

    async def fail(self, path: Path, relative: str, error: StepError) -> str:
        """Move ``path`` to ``Failed/`` beside ``<name>.error.json`` saying why."""
        try:
            target = await self._run(self._move_failed, path, relative, error)
        except FileNotFoundError:
            return "gone"
        metrics.WATCHER_FAILURES.labels(error.code).inc()
        logger.warning("path=%s failed (%s: %s), moved to %s", relative, error.code,
                       error.message, target.relative_to(self.root).as_posix())
        return "failed"

    def _move_failed(self, path: Path, relative: str, error: StepError) -> Path:
        target = free_name(self.root / FAILED / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        sidecar = target.with_name(target.name + ".error.json")
        report = {"file": relative, "error": error.code, "message": error.message,
                  "at": dt.datetime.now(dt.UTC).isoformat()}
        temp = sidecar.with_name(f".{sidecar.name}.tmp")
        temp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(temp, sidecar)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            sidecar.unlink(missing_ok=True)
            raise
        return target
