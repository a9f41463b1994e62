"""Files straight to storage (direct multipart uploads, storage/direct.py):

- ``POST /api/v1/areas/<uuid>/files/<name>/uploads`` with ``{"size": bytes}`` (and
  optionally declared ``sha256``/``crc32c``, hex): 201 with ``upload_id``, ``part_size``
  (the gateway's choice: ``PART_SIZE``, more when the file would need over 10,000 parts),
  ``parts`` (``part_number`` and ``url`` each: S3 presigned ``UploadPart`` URLs, or the
  gateway's signed part URLs on localdisk, which behave the same), ``expires_in`` and
  ``complete_url``. The client PUTs each part's bytes to its URL and keeps the answer's
  ``ETag``.
- ``POST .../uploads/<upload_id>/complete`` with ``{"parts": [{"part_number": n,
  "etag": "…"}, …]}`` (S3's ``PartNumber``/``ETag`` spelling is accepted too): the object
  is completed, checked against the declared size (400 ``size_mismatch``) and the area's
  limit (413), and recorded as the file's next version (201), whose checksums follow.
  400 ``invalid_part`` for a part list storage refuses (the upload stays open: send the
  part again, complete again); a repeated completion answers 200 with the file.
- ``DELETE .../uploads/<upload_id>``: abandon it (204).

A locked, deleted or submitted area refuses to start or complete one (409).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from areas import store
from areas.api import object_key
from areas.names import declared_checksums
from areas.web import AreaHandler, area_id_of, checked_name
from storage.direct import (
    MIB,
    DirectUploads,
    PartsRefused,
    direct_uploads,
    part_count,
    part_size_for,
)
from upload.errors import ApiError

logger = logging.getLogger(__name__)

PART_SIZE = 16 * MIB


class DirectHandler(AreaHandler):
    @property
    def direct(self) -> DirectUploads:
        found = direct_uploads(self.services.storage)
        if found is None:
            raise ApiError("not_found", "this storage takes no direct uploads")
        return found


class StartUpload(DirectHandler):
    async def post(self, raw_id: str, name: str) -> None:
        area_id, name = area_id_of(raw_id), checked_name(name)
        body = self.json_body()
        size = body.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ApiError("bad_request", "size (bytes) is required")
        declared = declared_checksums(body.get("sha256"), body.get("crc32c"))
        if isinstance(declared, str):
            raise ApiError("bad_request", declared)
        area = await self.run(store.check_accepting, self.services.database, area_id)
        if size > area["max_file_size"]:
            raise ApiError("upload_too_large",
                           f"a file of this area is at most {area['max_file_size']} bytes")
        part_size = part_size_for(size, PART_SIZE)
        key = object_key(area_id)
        state = await self.run(self.direct.start_direct, "quarantine", key)
        try:
            upload_id = await self.run(store.add_upload, self.services.database, area_id, name,
                                       key, size, part_size, declared, state)
        except BaseException:
            await self.run(self.direct.abort_direct, "quarantine", key, state)
            raise
        expires = self.services.settings.url_expiry
        urls = [{"part_number": n,
                 "url": await self.run(self.direct.direct_part_url, "quarantine", key, state, n,
                                       part_size, expires)}
                for n in range(1, max(1, part_count(size, part_size)) + 1)]
        logger.info("area %s: direct upload %s of %s (%d bytes, %d parts)", area_id, upload_id,
                    name, size, len(urls))
        self.set_status(201)
        self.write_json({"upload_id": upload_id, "name": name, "size": size,
                         "part_size": part_size, "parts": urls, "expires_in": expires,
                         "complete_url": self.request.full_url().split("?")[0]
                         + f"/{upload_id}/complete"})


def _parts(body: dict[str, Any]) -> list[tuple[int, str]]:
    parts = body.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ApiError("bad_request", "parts: a list of {part_number, etag}")
    found = []
    for part in parts:
        if not isinstance(part, dict):
            raise ApiError("bad_request", "each part is {part_number, etag}")
        number = part.get("part_number", part.get("PartNumber"))
        etag = part.get("etag", part.get("ETag"))
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise ApiError("bad_request", "each part is {part_number, etag}")
        found.append((number, etag))
    return found


class CompleteUpload(DirectHandler):
    async def post(self, raw_id: str, name: str, upload_id: str) -> None:
        area_id, name = area_id_of(raw_id), checked_name(name)
        parts = _parts(self.json_body())
        database, storage = self.services.database, self.services.storage
        upload = await self.run(store.get_upload, database, area_id, upload_id)
        if upload is None or upload["name"] != name:
            await self._completed_already(area_id, name, upload_id)
            return
        await self.run(store.check_accepting, database, area_id)
        key, state = upload["object_key"], json.loads(upload["storage_state"])
        try:
            await self.run(self.direct.complete_direct, "quarantine", key, state, parts)
        except PartsRefused as exc:
            raise ApiError("invalid_part", str(exc)) from None
        except FileNotFoundError:
            raise ApiError("no_such_upload", "the upload was aborted") from None
        size = await self.run(storage.size, "quarantine", key)
        area = await self.run(store.get_area, database, area_id)
        problem = None
        if size != upload["size"]:
            problem = ApiError("size_mismatch", f"the parts hold {size} bytes, not the "
                               f"{upload['size']} declared")
        elif area is None or size > area["max_file_size"]:
            problem = ApiError("upload_too_large", "the file is over the area's limit")
        if problem is not None:
            await self.run(storage.delete, "quarantine", key)
            await self.run(store.remove_upload, database, upload_id)
            raise problem
        try:
            # on failure (the area locked meanwhile, the database down) the completed
            # object is kept: completing again records it; the sweeper removes it if the
            # upload is abandoned (areas/worker.py)
            file, replaced = await self.run(
                store.record_file, database, area_id, name, key, size, upload["part_size"],
                json.loads(upload["declared"]), upload_id)
        except ApiError as exc:
            if exc.code != "no_such_upload":
                raise
            await self._completed_already(area_id, name, upload_id)  # a concurrent one did
            return
        if replaced is not None and replaced != key:
            await self.run(storage.delete, "quarantine", replaced)
        logger.info("area %s: %s version %d stored directly (%d bytes)", area_id, name,
                    file.version, size)
        row = await self.run(store.current_file, database, area_id, name)
        self.set_status(201)
        self.write_json(store.file_view(row) if row else {})

    async def _completed_already(self, area_id: str, name: str, upload_id: str) -> None:
        row = await self.run(store.current_file, self.services.database, area_id, name)
        if row is None or store.upload_id_of(row["object_key"]) != upload_id:
            raise ApiError("no_such_upload", "no such upload in progress")
        self.write_json(store.file_view(row))


class AbortUpload(DirectHandler):
    async def delete(self, raw_id: str, name: str, upload_id: str) -> None:
        area_id = area_id_of(raw_id)
        upload = await self.run(store.get_upload, self.services.database, area_id, upload_id)
        if upload is None:
            raise ApiError("no_such_upload", "no such upload in progress")
        await self.run(self.direct.abort_direct, "quarantine", upload["object_key"],
                       json.loads(upload["storage_state"]))
        await self.run(store.remove_upload, self.services.database, upload_id)
        self.set_status(204)
        self.finish()
