"""Read-only endpoints: status timeline, downloads, version, health, OpenAPI, metrics."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, BinaryIO

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from auth import has_scope, principal_of
from core.signing import verify_download
from storage import BUCKETS
from storage.disposition import content_disposition
from upload.base import ApiHandler
from upload.errors import ApiError
from upload.identity import Identity
from upload.openapi import SPEC, VERSION

logger = logging.getLogger(__name__)

COPY_BLOCK = 256 * 1024
# an object up to this size is opened and read in one executor round-trip (validators
# fetch every payload through here; most are small)
SMALL_OBJECT = 1024 * 1024
# how long a health request waits for the very first checks (after that it never waits)
FIRST_CHECK_WAIT = 0.09


def visible(identity: Identity | None, upload: dict[str, Any]) -> bool:
    """An identity sees its org's uploads (its account's, when it names no org)."""
    if identity is None:
        return True
    if identity.org_id is not None:
        return bool(upload["org_id"] == identity.org_id)
    return bool(upload["account"] == identity.account)


def status_visible(identity: Identity | None, upload: dict[str, Any]) -> bool:
    """On the status API a caller without an identity sees only the uploads made without
    one (issue 11: it saw every upload); an identity sees its org's."""
    if identity is None:
        return upload["org_id"] is None and upload["account"] is None
    return visible(identity, upload)


class StatusHandler(ApiHandler):
    """An upload's status and timeline: for the identity that made it (its org), for an
    anonymous caller only when it was made without an identity, and for any upload to an
    API key with the scope ``status`` (operators)."""

    async def get(self, request_id: str) -> None:
        identity = self.request_identity()
        caller = await principal_of(self)
        operator = caller is not None and caller.has("status")
        if identity is None and self.services.settings.identity_required and not operator:
            raise ApiError("identity_required", "a valid x-rh-identity header is required")
        loop = asyncio.get_running_loop()
        db = self.services.database
        upload = await loop.run_in_executor(self.services.executor, db.get_upload, request_id)
        if upload is None or not (operator or status_visible(identity, upload)):
            raise ApiError("not_found", f"no upload {request_id}")
        timeline = await loop.run_in_executor(self.services.executor, db.timeline, request_id)
        self.write_json({
            "request_id": request_id,
            "service": upload["service"],
            "status": upload["status"],
            "reason": upload["reason"],
            "size": upload["size"],
            "checksums": {"sha256": upload["sha256"]},
            "timeline": [
                {"status": e["status"], "message": e["message"], "at": e["at"].isoformat()}
                for e in timeline
            ],
        })


def open_and_read(storage: Any, bucket: str, key: str) -> tuple[BinaryIO | None, bytes]:
    """Open an object and read its first ``SMALL_OBJECT`` bytes (a little more when that
    is not all): ``(None, data)`` when ``data`` is the whole object, else ``(reader, head)``
    with the reader positioned after ``head``."""
    reader = storage.open_reader(bucket, key)
    try:
        head = reader.read(SMALL_OBJECT)
        if len(head) < SMALL_OBJECT:
            more = reader.read(COPY_BLOCK)
            if not more:
                reader.close()
                return None, head
            head += more
        return reader, head
    except BaseException:
        reader.close()
        raise


class DownloadHandler(ApiHandler):
    """Serves an object through an HMAC-signed, expiring URL (localdisk driver). The
    signature is enough (validators send no identity); a request that carries an identity
    is also refused another org's payload."""

    async def get(self, bucket: str, key: str) -> None:
        secret = self.services.settings.url_signing_key
        filename = self.get_query_argument("filename", "", strip=False)  # as signed
        ok = bucket in BUCKETS and verify_download(
            secret, bucket, key, self.get_query_argument("expires", ""),
            self.get_query_argument("signature", ""), filename=filename)
        if not ok:
            raise ApiError("forbidden", "missing, expired or invalid signature")
        loop = asyncio.get_running_loop()
        executor, storage = self.services.executor, self.services.storage
        identity = self.request_identity()
        if identity is not None:
            db = self.services.database
            upload = await loop.run_in_executor(executor, db.upload_by_object_key, key)
            if upload is None or not visible(identity, upload):
                raise ApiError("not_found", "no such object")
        try:
            reader, head = await loop.run_in_executor(executor, open_and_read, storage,
                                                      bucket, key)
        except FileNotFoundError:
            raise ApiError("not_found", "no such object") from None
        self.set_header("Content-Type", "application/octet-stream")
        if filename:  # signed with the URL: the name the object is downloaded as
            self.set_header("Content-Disposition", content_disposition(filename))
        if reader is None:  # the whole object: one write, with a Content-Length
            self.finish(head)
            return
        try:
            self.write(head)
            await self.flush()
            while block := await loop.run_in_executor(executor, reader.read, COPY_BLOCK):
                self.write(block)
                await self.flush()
        finally:
            reader.close()
        self.finish()


class VersionHandler(ApiHandler):
    def get(self) -> None:
        self.write_json({"version": VERSION})


class HealthHandler(ApiHandler):
    """200, or 503 naming what is down: from the background checks (core/health.py), so
    it answers at once whatever the components do. Anyone sees the components' names and
    ``ok``/``down``; why one is down (paths, hosts, drivers' messages) is only for an API
    key with the scope ``admin`` (``details``; everyone when ``AUTH_REQUIRED`` is off)."""

    async def get(self) -> None:
        monitor = self.services.health
        monitor.start()
        if not monitor.first.is_set():  # the process just started: give them a moment
            deadline = asyncio.get_running_loop().time() + FIRST_CHECK_WAIT
            while not monitor.first.is_set() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        down = monitor.down()
        body: dict[str, Any] = {
            "status": "ok" if not down else "unavailable", "down": sorted(down),
            "components": {name: "down" if name in down else "ok" for name in monitor.checks}}
        if await has_scope(self, "admin"):
            body["details"] = down
        if self.services.without_validator:  # the all-in-one process: not down, but said
            body["without_validator"] = self.services.without_validator
        self.set_status(200 if not down else 503)
        self.write_json(body)


class LiveHandler(ApiHandler):
    """``/livez``: the process answers (its event loop runs); nothing else is checked."""

    def get(self) -> None:
        self.write_json({"status": "alive"})


class ReadyHandler(ApiHandler):
    """``/readyz``: ready for traffic when storage and the database are up (the last
    background checks, core/health.py). A broker outage does not make it unready: uploads
    are still accepted, their announcements wait in the outbox."""

    NEEDED = ("storage", "database")

    def get(self) -> None:
        monitor = self.services.health
        monitor.start()
        down = {k: v for k, v in monitor.down().items() if k in self.NEEDED}
        self.set_status(200 if not down else 503)
        self.write_json({"status": "ready" if not down else "not_ready",
                         "down": sorted(down)})


def probe_routes(services: Any) -> list[Any]:
    """``/metrics``, ``/livez``, ``/readyz`` and ``/api/v1/health``: what every process
    that serves HTTP answers."""
    deps = {"services": services}
    return [(r"/metrics", MetricsHandler, deps), (r"/livez", LiveHandler, deps),
            (r"/readyz", ReadyHandler, deps), (r"/api/v1/health", HealthHandler, deps)]


class OpenApiHandler(ApiHandler):
    def get(self) -> None:
        self.write_json(SPEC)


class MetricsHandler(ApiHandler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest())


class NotFoundHandler(ApiHandler):
    def prepare(self) -> None:
        raise ApiError("not_found", "no such endpoint")
