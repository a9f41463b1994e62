"""The bundler: checks a pending treatment plan and builds its ``PROVPREV`` bundle once.

A plan is ready when it has transfers and every one of them is uploaded and validated
(its upload ``validated``/``available``: the object is in the perm bucket). The bundle is
a zip of the OBJ files, stored (not deflated) so each entry is the plain OBJ, named by its
original file name, in file-name order, with each entry's time taken from its record: the
same content gives the same bytes and checksum. It is streamed through ``zipfile`` straight
into ``storage.open_writer("perm", …)`` (gunzipping the watcher's gzip objects on the fly,
1 MiB at a time, checking each file's sha1): no whole file nor bundle is held in memory
or on local disk.

Exactly once: the build runs under a claim (``consumer.plans.claim_bundle``). Once the
object is committed, one transaction marks the bundle done, clears the plan's pending
flag and puts ``sdc_asset_transfer_uploads_complete`` (``platform.asset-transfer``) and the
announcement (``platform.upload.available``, service ``treatment-plan``) in the outbox.
A file that is missing or does not match its hash fails the bundle for good (shown to
staff); a storage or database outage releases the claim and the plan is retried later.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
import time
import uuid
import zipfile
import zlib
from typing import IO, Any, Callable, Sequence

from bus import topics
from consumer import plans
from consumer.naming import BUNDLED_TYPE, base_name
from consumer.plans import Claim, PlanFile
from core.settings import Settings
from db import Database, OutboxItem, utcnow
from storage import ObjectWriter, Storage

logger = logging.getLogger(__name__)

ASSET_TRANSFER_TOPIC = topics.ASSET_TRANSFER
AVAILABLE_TOPIC = topics.AVAILABLE
SERVICE = "treatment-plan"
CONTENT_TYPE = "application/vnd.redhat.treatment-plan.provprev+zip"
BLOCK = 1024 * 1024
LEASE_SECONDS = 120.0
MAX_BACKOFF = 60.0


class BundleFailed(Exception):
    """This content can never be bundled (a file is missing or corrupt)."""


class ClaimLost(Exception):
    """Another bundler took the claim over (ours expired) or we are stopping."""


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF, 0.5 * 2 ** attempts))


def blocker(files: Sequence[PlanFile]) -> str | None:
    """Why the plan cannot be bundled yet, or None when it is ready."""
    if not files:
        return "no transfers"
    for f in files:
        if f.unmatched_reason or f.type != BUNDLED_TYPE:
            return f"{f.file_name} is not a bundled OBJ file"
        if not f.is_uploaded:
            return f"{f.file_name} is not uploaded yet"
        if f.upload_status == "rejected":
            return f"{f.file_name} failed validation"
        if not f.valid:
            return f"{f.file_name} is not validated yet"
    return None


class _Sink:
    """What zipfile writes to: forwards to the object writer, counting and hashing."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.writer.write(bytes(data))
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class Bundler:
    def __init__(self, settings: Settings, storage: Storage, database: Database,
                 on_recorded: Callable[[], None] = lambda: None, owner: str | None = None,
                 lease: float = LEASE_SECONDS) -> None:
        self.settings = settings
        self.storage = storage
        self.database = database
        self.on_recorded = on_recorded
        self.owner = owner or uuid.uuid4().hex
        self.lease = lease
        self.stopping = threading.Event()

    def run_pending(self, limit: int = 20) -> int:
        """Check the plans that are due; returns how many bundles were built."""
        with self.database.engine.connect() as conn:
            due = plans.due_plans(conn, limit)
        built = 0
        for plan_uuid in due:
            if self.stopping.is_set():
                break
            try:
                built += self.process(plan_uuid) == "bundled"
            except Exception:  # noqa: BLE001 - one plan must not stop the others
                logger.exception("plan=%s check failed; retrying later", plan_uuid)
                with self.database.engine.begin() as conn:
                    plans.retry_later(conn, plan_uuid, backoff)
        return built

    def process(self, plan_uuid: str) -> str:
        """Check one plan and bundle it when ready. Returns what happened: ``waiting``,
        ``bundled``, ``done`` (already bundled), ``busy``, ``stale``, ``failed``, ``lost``."""
        engine = self.database.engine
        with engine.connect() as conn:
            revision = plans.plan_revision(conn, plan_uuid)
            files = plans.plan_files(conn, plan_uuid) if revision is not None else []
        if revision is None:
            return "unknown"
        reason = blocker(files)
        if reason:
            with engine.begin() as conn:
                plans.mark_checked(conn, plan_uuid, revision)
            logger.info("plan=%s not ready: %s", plan_uuid, reason)
            return "waiting"
        with engine.begin() as conn:
            claim = plans.claim_bundle(conn, plan_uuid, revision, plans.content_key(files),
                                       self.owner, self.lease)
        if isinstance(claim, str):
            if claim in ("done", "failed"):
                with engine.begin() as conn:
                    plans.mark_checked(conn, plan_uuid, revision)
            logger.info("plan=%s bundle not built here: %s", plan_uuid, claim)
            return claim
        return self._bundle(claim, files, revision)

    def _bundle(self, claim: Claim, files: Sequence[PlanFile], revision: int) -> str:
        engine = self.database.engine
        started = utcnow()
        logger.info("plan=%s building %s v%d (request_id=%s, %d files)", claim.plan_uuid,
                    plans.KIND, claim.version, claim.request_id, len(files))
        try:
            sha256, size = self._build(claim, files)
        except BundleFailed as exc:
            with engine.begin() as conn:
                plans.fail_claim(conn, claim, str(exc))
                plans.mark_checked(conn, claim.plan_uuid, revision)
            logger.error("plan=%s bundle v%d failed: %s", claim.plan_uuid, claim.version, exc)
            return "failed"
        except ClaimLost as exc:
            with engine.begin() as conn:
                plans.release_claim(conn, claim)  # a no-op when it was taken over
            logger.warning("plan=%s bundle v%d abandoned: %s", claim.plan_uuid, claim.version, exc)
            return "lost"
        except BaseException:
            with engine.begin() as conn:
                plans.release_claim(conn, claim)
            raise
        messages = self._messages(claim, files, sha256, size)
        with engine.begin() as conn:
            if not plans.complete_claim(conn, claim, sha256, size, files):
                logger.warning("plan=%s bundle v%d: claim lost before completion",
                               claim.plan_uuid, claim.version)
                return "lost"
            plans.mark_checked(conn, claim.plan_uuid, revision)
            self.database.record_bundle(conn, self._row(claim, files, sha256, size), started,
                                        messages)
        self.on_recorded()
        logger.info("plan=%s bundle v%d done: %d bytes, sha256 %s (request_id=%s)",
                    claim.plan_uuid, claim.version, size, sha256, claim.request_id)
        return "bundled"

    def _build(self, claim: Claim, files: Sequence[PlanFile]) -> tuple[str, int]:
        writer = self.storage.open_writer("perm", claim.object_key)
        sink = _Sink(writer)
        renew = _Renewer(self, claim)
        try:
            with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
                for f in files:
                    self._add(archive, f, renew)
            renew()
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return sink.sha256.hexdigest(), sink.size

    def _add(self, archive: zipfile.ZipFile, f: PlanFile, renew: Callable[[], None]) -> None:
        assert f.object_key is not None
        info = zipfile.ZipInfo(base_name(f.file_name), date_time=_zip_time(f))
        info.external_attr = 0o644 << 16
        info.file_size = f.size or 0  # lets zipfile choose zip64 for large files up front
        digest = hashlib.sha1()
        try:
            raw = self.storage.open_reader("perm", f.object_key)
        except FileNotFoundError:
            raise BundleFailed(f"{f.file_name}: upload {f.request_id} is missing from perm") from None
        with raw, archive.open(info, "w") as entry:
            source: gzip.GzipFile | IO[bytes] = (gzip.GzipFile(fileobj=raw) if f.compression == "gzip"
                                                 else raw)
            try:
                while block := source.read(BLOCK):
                    digest.update(block)
                    entry.write(block)
                    renew()
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise BundleFailed(f"{f.file_name}: corrupt gzip object: {exc}") from None
        if digest.hexdigest() != f.sha1:
            raise BundleFailed(f"{f.file_name}: content sha1 {digest.hexdigest()} is not {f.sha1}")

    def _messages(self, claim: Claim, files: Sequence[PlanFile], sha256: str,
                  size: int) -> list[OutboxItem]:
        url = self.storage.signed_url("perm", claim.object_key, self.settings.url_expiry,
                                      plans.bundle_filename(claim.plan_uuid, claim.version))
        names = [base_name(f.file_name) for f in files]
        plan = {"treatment_plan_uuid": claim.plan_uuid, "kind": plans.KIND, "version": claim.version}
        complete = {"type": "sdc_asset_transfer_uploads_complete", **plan,
                    "request_id": claim.request_id}
        available: dict[str, Any] = {
            "request_id": claim.request_id, "payload_id": claim.request_id, "service": SERVICE,
            "category": plans.KIND.lower(), "content_type": CONTENT_TYPE, "size": size,
            "url": url, "account": None, "org_id": None, "principal": None,
            "rh_account": None, "rh_principal": None,
            "b64_identity": None, "metadata": {**plan, "files": names},
            "checksums": {"sha256": sha256}, "mime": "application/zip",
            "filename": plans.bundle_filename(claim.plan_uuid, claim.version),
            "timestamp": utcnow().isoformat(), **plan,
        }
        return [OutboxItem(ASSET_TRANSFER_TOPIC, claim.request_id, complete, request_id=claim.request_id),
                OutboxItem(AVAILABLE_TOPIC, claim.request_id, available, request_id=claim.request_id,
                           on_sent_status="available")]

    def _row(self, claim: Claim, files: Sequence[PlanFile], sha256: str,
             size: int) -> dict[str, Any]:
        """The bundle as an upload (the status API's answer for its request id)."""
        plan = {"treatment_plan_uuid": claim.plan_uuid, "kind": plans.KIND,
                "version": claim.version, "files": [base_name(f.file_name) for f in files]}
        return {
            "request_id": claim.request_id, "service": SERVICE, "category": plans.KIND.lower(),
            "content_type": CONTENT_TYPE, "size": size, "sha256": sha256,
            "filename": plans.bundle_filename(claim.plan_uuid, claim.version),
            "mime": "application/zip", "metadata": json.dumps(plan), "source": "bundler",
            "object_key": claim.object_key, "bucket": "perm",
            "note": f"bundling treatment plan {claim.plan_uuid}",
        }


class _Renewer:
    """Renews the claim's lease every quarter lease while building; raises ``ClaimLost``
    when it was taken over or the bundler is stopping."""

    def __init__(self, bundler: Bundler, claim: Claim) -> None:
        self.bundler = bundler
        self.claim = claim
        self.next = time.monotonic() + bundler.lease / 4

    def __call__(self) -> None:
        if self.bundler.stopping.is_set():
            raise ClaimLost("stopping")
        if time.monotonic() < self.next:
            return
        with self.bundler.database.engine.begin() as conn:
            if not plans.renew_claim(conn, self.claim, self.bundler.lease):
                raise ClaimLost("claim taken over")
        self.next = time.monotonic() + self.bundler.lease / 4


def _zip_time(f: PlanFile) -> tuple[int, int, int, int, int, int]:
    at = f.created_at
    return (max(at.year, 1980), at.month, at.day, at.hour, at.minute, at.second)
