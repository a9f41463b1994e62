"""The area API (README.md, "Upload areas"):

- ``POST /api/v1/areas/<uuid>`` creates the area (201; 200 when it exists), optional
  body ``{"max_file_size": bytes}`` (default ``MAX_LENGTH``); ``GET`` describes it: its
  files with their checksums and states, counts by state, its validations; ``DELETE``
  removes it and its files asynchronously (202: ``deleting``, then ``deleted``).
- ``POST .../lock`` and ``.../unlock``: a locked area accepts no files (409
  ``area_locked``).
- ``GET .../status``: the area's state and its files' counts by state (``checksumming``,
  ``checksummed``, ``checksum_mismatch``, ``unvalidated``, ``validating``, ``valid``,
  ``invalid``, and ``files``).
- ``PUT .../files/<name>``: the file's bytes, streamed into storage (one chunk in
  flight), at most the area's ``max_file_size`` (413, from Content-Length or while
  streaming); declared checksums in ``X-Checksum-SHA256`` / ``X-Checksum-CRC32C`` (hex).
  201 with the file once stored and recorded; its checksums follow (checksum workers).
  ``GET .../files/<name>``: the file.
"""
from __future__ import annotations

import logging
from typing import Any, cast

from tornado.http1connection import HTTP1Connection
from tornado.web import stream_request_body

from areas import store
from areas.names import declared_checksums
from areas.web import AreaHandler, StreamedBody, area_id_of, checked_name
from storage import AREAS_PREFIX, ObjectWriter, new_object_key
from upload.errors import ApiError

logger = logging.getLogger(__name__)


# The S3 driver's writer stores an object of at least this many bytes as a multipart
# upload of parts of this size (storage/s3.py PART_SIZE), a smaller one with a single
# PutObject: the part size a gateway PUT's S3 ETag is recomputed for.
GATEWAY_PART_SIZE = 8 * 1024 * 1024


SLACK = 1024 * 1024


def put_part_size(size: int) -> int:
    return GATEWAY_PART_SIZE if size >= GATEWAY_PART_SIZE else 0


def object_key(area_id: str) -> str:
    """A new object of the area: ``areas/<area>/<uuid7 hex>`` (the name is in the DB)."""
    return f"{AREAS_PREFIX}{area_id}/{new_object_key()}"


class AreaResource(AreaHandler):
    async def post(self, raw_id: str) -> None:
        area_id = area_id_of(raw_id)
        body = self.json_body()
        limit = body.get("max_file_size", self.services.settings.max_length)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ApiError("bad_request", "max_file_size must be a positive integer")
        if set(body) - {"max_file_size"}:
            raise ApiError("bad_request", f"unknown fields: {sorted(set(body) - {'max_file_size'})}")
        created = await self.run(store.create_area, self.services.database, area_id, limit)
        area = await self.run(store.describe, self.services.database, area_id)
        self.set_status(201 if created else 200)
        self.write_json(area)

    async def get(self, raw_id: str) -> None:
        area = await self.run(store.describe, self.services.database, area_id_of(raw_id))
        if area is None:
            raise ApiError("not_found", "no such area")
        self.write_json(area)

    async def delete(self, raw_id: str) -> None:
        area_id = area_id_of(raw_id)
        await self.run(store.start_delete, self.services.database, area_id)
        self.set_status(202)
        self.write_json(await self.run(store.describe, self.services.database, area_id))


class StatusResource(AreaHandler):
    async def get(self, raw_id: str) -> None:
        found = await self.run(store.status, self.services.database, area_id_of(raw_id))
        if found is None:
            raise ApiError("not_found", "no such area")
        self.write_json(found)


class LockResource(AreaHandler):
    locked = True

    async def post(self, raw_id: str) -> None:
        area_id = area_id_of(raw_id)
        state = await self.run(store.set_lock, self.services.database, area_id, self.locked)
        self.write_json({"area_id": area_id, "state": state})


class UnlockResource(LockResource):
    locked = False


@stream_request_body
class FileResource(AreaHandler, StreamedBody):
    def initialize(self, services: Any) -> None:
        super().initialize(services)
        self.writer: ObjectWriter | None = None
        self.key = ""
        self.limit = 0
        self.received = 0
        self.failed = False
        self.declared: dict[str, str] = {}

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished or self.request.method != "PUT":
            return
        raw_id, name = self.path_args
        area_id, name = area_id_of(raw_id), checked_name(name)
        declared = declared_checksums(self.request.headers.get("X-Checksum-SHA256"),
                                      self.request.headers.get("X-Checksum-CRC32C"))
        if isinstance(declared, str):
            raise ApiError("bad_request", declared)
        self.declared = declared
        area = await self.run(store.check_accepting, self.services.database, area_id)
        self.limit = area["max_file_size"]
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise ApiError("upload_too_large", f"a file of this area is at most {self.limit} bytes")
        # room past the limit, so that a chunked body over it is refused here (413) before
        # Tornado's own limit (400) would
        cast(HTTP1Connection, self.request.connection).set_max_body_size(self.limit + SLACK)
        self.key = object_key(area_id)
        self.writer = await self.run(self.services.storage.open_writer, "quarantine", self.key)

    async def data_received(self, chunk: bytes) -> None:
        if self.failed or self.writer is None:
            return
        self.received += len(chunk)
        if self.received > self.limit:
            await self._fail(ApiError("upload_too_large",
                                      f"a file of this area is at most {self.limit} bytes"))
            return
        await self.run(self.writer.write, chunk)

    async def put(self, raw_id: str, name: str) -> None:
        if self.failed or self.writer is None:
            return
        writer, self.writer = self.writer, None
        area_id = area_id_of(raw_id)
        try:
            await self.run(writer.commit)
            file, replaced = await self.run(store.record_file, self.services.database, area_id,
                                            name, self.key, self.received,
                                            put_part_size(self.received), self.declared)
        except BaseException:
            await self.run(self.services.storage.delete, "quarantine", self.key)
            raise
        if replaced is not None:
            await self.run(self.services.storage.delete, "quarantine", replaced)
        logger.info("area %s: %s version %d stored (%d bytes)", area_id, name, file.version,
                    self.received)
        row = await self.run(store.current_file, self.services.database, area_id, name)
        self.set_status(201)
        self.write_json(store.file_view(row) if row else {})

    async def get(self, raw_id: str, name: str) -> None:
        row = await self.run(store.current_file, self.services.database, area_id_of(raw_id),
                             name)
        if row is None:
            raise ApiError("not_found", "no such file in the area")
        self.write_json(store.file_view(row))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.request.method == "PUT":
            # refused before its body was read: Tornado closes the connection after the
            # answer, which the client must not reuse
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

