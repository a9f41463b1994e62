"""tus 1.0.0 endpoints: ``<prefix>/tus/`` creates uploads (``POST``, with the creation,
creation-with-upload, creation-defer-length and concatenation extensions) and describes
the server (``OPTIONS``); ``<prefix>/tus/<id>`` is an upload (``HEAD``, ``PATCH``,
``DELETE``). The protocol only: storage, hashing and recording are core.resumable's."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from tornado.web import stream_request_body

from core.ingest import Payload
from core.intake import IntakeError, clean_filename, request_id_from, route
from core.resumable import held
from core.resumable_tasks import concatenate
from tus import protocol
from tus.base import LEASE_WAIT, TusBase
from tus.protocol import TusError, number

logger = logging.getLogger(__name__)


@stream_request_body
class CreationHandler(TusBase):
    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "POST":
            return
        settings = self.services.settings
        if self.identity is None and settings.identity_required:
            raise TusError("identity_required", "a valid x-rh-identity header is required")
        concat = protocol.parse_concat(self.request.headers.get("Upload-Concat"))
        metadata = protocol.parse_metadata(self.request.headers.get("Upload-Metadata"))
        has_body = bool(number(self.request.headers, "Content-Length")) or \
            "chunked" in self.request.headers.get("Transfer-Encoding", "")
        if concat is not None and concat[0] == "final":
            if has_body or "Upload-Length" in self.request.headers:
                raise TusError("bad_header", "a final upload has no Upload-Length and no body")
            await self._create_final(concat[1], metadata)
            return
        length = self._length()
        if length is not None and length > settings.max_length:
            raise TusError("upload_too_large",
                           f"Upload-Length {length} exceeds the limit of {settings.max_length}")
        partial = concat is not None
        payload = None if partial else self._payload(metadata)
        if has_body and self.request.headers.get("Content-Type") != protocol.OFFSET_TYPE:
            raise TusError("unsupported_media_type",
                           f"a body sent with the creation must be {protocol.OFFSET_TYPE}")
        row = await self._create("partial" if partial else "single", length, payload, None,
                                 leased=True)
        await self.open_body(row, length, None)

    def _length(self) -> int | None:
        length = number(self.request.headers, "Upload-Length")
        deferred = self.request.headers.get("Upload-Defer-Length")
        if deferred is not None and deferred.strip() != "1":
            raise TusError("bad_header", "Upload-Defer-Length must be 1")
        if (length is None) == (deferred is None):
            raise TusError("bad_header",
                           "give exactly one of Upload-Length and Upload-Defer-Length: 1")
        return length

    def _payload(self, metadata: dict[str, str]) -> Payload:
        settings = self.services.settings
        content_type = metadata.get("filetype") or metadata.get("content_type")
        try:
            routed = route(content_type, settings.valid_upload_types)
        except IntakeError as exc:
            raise TusError(exc.code, "Upload-Metadata filetype/content_type: " + exc.message
                           ) from None
        identity = self.identity
        self.request_id = request_id_from(self.request.headers.get(protocol.REQUEST_ID_HEADER))
        return Payload(
            request_id=self.request_id, service=routed.service, category=routed.category,
            content_type=routed.content_type,
            filename=clean_filename(metadata.get("filename") or metadata.get("name")),
            account=identity.account if identity else None,
            org_id=identity.org_id if identity else None,
            principal=identity.principal if identity else None,
            b64_identity=identity.raw if identity else None,
            metadata=metadata, source="tus",
        )

    async def _create(self, kind: str, length: int | None, payload: Payload | None,
                      concat: str | None, leased: bool) -> dict[str, Any]:
        identity = self.identity
        try:
            row = await self.run(
                self.resumable.create, kind, length, payload,
                self.request.headers.get("Upload-Metadata"), concat,
                identity.account if identity else None, identity.org_id if identity else None,
                self.token if leased else None)
        except IntegrityError:
            raise TusError("duplicate_request_id",
                           f"request id {self.request_id} was already used") from None
        if leased:
            self.leased = row["id"]
        self.row = row
        self.set_header("Location", self.upload_url(row["id"]))
        self.set_header("Upload-Expires", protocol.http_date(row["expires_at"]))
        if row["request_id"]:
            self.set_header(protocol.REQUEST_ID_HEADER, row["request_id"])
        return row

    async def _create_final(self, partial_ids: list[str], metadata: dict[str, str]) -> None:
        settings = self.services.settings
        found = await self.run(self.services.database.get_tus_many, partial_ids)
        for partial_id in partial_ids:
            row = found.get(partial_id)
            if row is None or not self.visible(row) or row["kind"] != "partial":
                raise TusError("partial_not_complete", f"{partial_id} is not a partial upload")
            if row["state"] != "done":
                raise TusError("partial_not_complete",
                               f"partial upload {partial_id} is not complete")
        length = sum(int(found[i]["upload_length"]) for i in partial_ids)
        if length > settings.max_length:
            raise TusError("upload_too_large", f"the partial uploads hold {length} bytes, over "
                           f"the limit of {settings.max_length}")
        payload = self._payload(metadata)
        leased_partials = await self.run(self.resumable.lease_partials,
                                         {"concat": json.dumps({"partials": partial_ids})},
                                         self.token)
        if leased_partials is None:
            raise TusError("upload_locked", "a partial upload is in use; retry later")
        self.partials = leased_partials
        concat = json.dumps({"header": self.request.headers["Upload-Concat"],
                             "partials": partial_ids})
        try:
            self.final = await self._create("final", length, payload, concat, leased=True)
        except BaseException:
            for partial in leased_partials:
                await self.run(self.resumable.release, partial["id"], self.token)
            raise

    async def post(self) -> None:
        if self.failed:
            return
        if hasattr(self, "final"):
            await self.run(concatenate, self.resumable, self.final, self.token, self.partials)
            self.leased = None
            self.set_header("Upload-Offset", str(self.final["upload_length"]))
            self.set_status(201)
            self.finish()
            return
        offset = await self.close_body()
        self.set_header("Upload-Offset", str(offset))
        self.set_status(201)
        self.finish()


@stream_request_body
class UploadHandler(TusBase):
    complete_row: dict[str, Any] | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "PATCH":
            return
        if self.request.headers.get("Content-Type") != protocol.OFFSET_TYPE:
            raise TusError("unsupported_media_type", f"PATCH bodies must be {protocol.OFFSET_TYPE}")
        offset = number(self.request.headers, "Upload-Offset")
        if offset is None:
            raise TusError("bad_header", "PATCH needs Upload-Offset")
        checksum = protocol.parse_checksum(self.request.headers.get("Upload-Checksum"))
        declared = number(self.request.headers, "Upload-Length")
        body = number(self.request.headers, "Content-Length")
        tus_id = self.path_args[0]
        row = self._patchable(await self.load(tus_id), offset)
        length = self._new_length(row, declared, offset)
        if length is not None and body is not None and offset + body > length:
            raise TusError("upload_too_large", f"{offset} + {body} bytes go past the upload's "
                           f"length of {length}")
        row = self._patchable(await self.lease(tus_id), offset)
        if row["state"] == "complete":  # stored, not recorded: a retry of the last PATCH
            if body:
                raise TusError("upload_too_large", "every byte of this upload is stored")
            self.complete_row = row
            return
        await self.open_body(row, length, checksum)

    def _patchable(self, row: dict[str, Any], offset: int) -> dict[str, Any]:
        if row["kind"] == "final":
            raise TusError("final_upload", "a final upload cannot be patched")
        if row["state"] == "done":
            raise TusError("upload_finished", "this upload is complete")
        if row["upload_offset"] != offset:
            raise TusError("offset_mismatch", f"Upload-Offset {offset} is not the upload's "
                           f"offset {row['upload_offset']}")
        return row

    def _new_length(self, row: dict[str, Any], declared: int | None, offset: int) -> int | None:
        length = row["upload_length"]
        if declared is None:
            return length  # type: ignore[no-any-return]
        if length is not None and declared != length:
            raise TusError("bad_header", f"Upload-Length {declared} differs from the upload's "
                           f"length {length}")
        if declared < offset:
            raise TusError("bad_header", f"Upload-Length {declared} is below the offset {offset}")
        if declared > self.services.settings.max_length:
            raise TusError("upload_too_large", f"Upload-Length {declared} exceeds the limit of "
                           f"{self.services.settings.max_length}")
        return declared

    async def patch(self, tus_id: str) -> None:
        if self.failed:
            return
        if self.complete_row is not None:
            await self.run(self.resumable.finish, self.complete_row, self.token)
            self.leased = None
            self.set_header("Upload-Offset", str(self.complete_row["upload_offset"]))
            self.set_status(204)
            self.finish()
            return
        offset = await self.close_body()
        self.set_header("Upload-Offset", str(offset))
        if self.length is None or offset < self.length:
            self.set_header("Upload-Expires", protocol.http_date(self.resumable.expires_at()))
        self.set_status(204)
        self.finish()

    async def head(self, tus_id: str) -> None:
        row = await self._settled(await self.load(tus_id))
        if row["state"] == "complete":
            row = await self._finish_left(row)
        if row["kind"] != "final" or row["state"] == "done":
            self.set_header("Upload-Offset", str(row["upload_offset"]))
        if row["upload_length"] is None:
            self.set_header("Upload-Defer-Length", "1")
        else:
            self.set_header("Upload-Length", str(row["upload_length"]))
        if row["upload_metadata"]:
            self.set_header("Upload-Metadata", _header_safe(row["upload_metadata"]))
        if row["kind"] == "partial":
            self.set_header("Upload-Concat", "partial")
        elif row["kind"] == "final":
            self.set_header("Upload-Concat", _header_safe(json.loads(row["concat"])["header"]))
        if row["state"] != "done":
            self.set_header("Upload-Expires", protocol.http_date(row["expires_at"]))
        if row["request_id"]:
            self.set_header(protocol.REQUEST_ID_HEADER, row["request_id"])
        self.set_status(200)
        self.finish()

    async def _settled(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row once no request is writing it (waiting up to ``LEASE_WAIT``): a client
        resuming after a cut connection asks before the server has recorded what that
        connection delivered."""
        deadline = asyncio.get_running_loop().time() + LEASE_WAIT
        while held(row) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            row = await self.load(row["id"])
        return row

    async def _finish_left(self, row: dict[str, Any]) -> dict[str, Any]:
        """Every byte is stored but the payload was not recorded (its request or gateway
        went away): record it now, if nobody else is."""
        leased = await self.run(self.resumable.acquire, row["id"], self.token, ("complete",))
        if leased is None:
            return row
        self.leased = row["id"]
        await self.run(self.resumable.finish, leased, self.token)
        self.leased = None
        return {**leased, "state": "done"}

    async def delete(self, tus_id: str) -> None:
        row = await self.load(tus_id)
        if row["state"] == "done" and row["kind"] != "partial":
            raise TusError("upload_finished", "a completed upload is in the validation "
                           "pipeline and cannot be terminated")
        states = ("done",) if row["state"] == "done" else ("receiving", "complete")
        row = await self.lease(tus_id, states)
        await self.run(self.resumable.end, row, self.token, "terminated",
                       "terminated by its client")
        self.leased = None
        self.set_status(204)
        self.finish()


def _header_safe(value: str) -> str:
    """A stored header value sent back: nothing that could split or smuggle headers."""
    return "".join(ch for ch in value if ch.isprintable())
