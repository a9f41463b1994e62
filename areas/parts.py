"""``PUT /api/v1/direct/<bucket>/<upload id>/<part number>?max=…&expires=…&signature=…``:
the part URLs of a direct upload on a driver whose parts go through the gateway
(localdisk's ``GatewayParts``). They behave as S3's presigned ``UploadPart`` URLs: the
signature is the credential (no API key), the body is the part (``Content-Length``
required: 411 without it, 413 over the signed ``max``), and the answer is 200 with the
part's ``ETag`` (its quoted MD5). A part sent again replaces the earlier one. 403 for a
forged, altered or expired URL; 404 ``no_such_upload`` once the upload is completed or
aborted. The body is streamed to disk (one chunk in flight), never held in memory.
"""
from __future__ import annotations

import logging
from typing import Any

from tornado.web import stream_request_body

from areas.web import StreamedBody
from core.signing import DIRECT_PREFIX, verify_part
from storage.direct import MAX_PARTS, PartWriter, gateway_parts
from upload.errors import ApiError

logger = logging.getLogger(__name__)

@stream_request_body
class PartHandler(StreamedBody):
    scope = "public"  # the URL's signature is the credential (see auth/web.py)

    def initialize(self, services: Any) -> None:
        super().initialize(services)
        parts = gateway_parts(services.storage)
        assert parts is not None
        self.parts = parts
        self.writer: PartWriter | None = None
        self.limit = 0
        self.expected = 0
        self.received = 0
        self.failed = False
        self.request_id = "-"

    async def prepare(self) -> None:
        self.check_method()
        bucket, upload_id, number = self.path_args
        part = int(number)
        if not 1 <= part <= MAX_PARTS:
            raise ApiError("bad_request", f"part numbers run from 1 to {MAX_PARTS}")
        limit = verify_part(self.services.settings.url_signing_key, bucket, upload_id, part,
                            self.get_query_argument("max", ""),
                            self.get_query_argument("expires", ""),
                            self.get_query_argument("signature", ""))
        if limit is None:
            raise ApiError("forbidden", "the part URL is forged, altered or expired")
        self.request_id = upload_id
        length = self.request.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError("length_required", "a part needs a Content-Length")
        if int(length) > limit:
            raise ApiError("upload_too_large", f"a part of this upload is at most {limit} bytes")
        self.limit, self.expected = limit, int(length)
        self.request.connection.set_max_body_size(max(limit, 1))  # type: ignore[union-attr]
        try:
            self.writer = await self.run(self.parts.open_direct_part, bucket, upload_id, part)
        except FileNotFoundError:
            raise ApiError("no_such_upload", "the upload is completed, aborted or unknown") from None

    async def data_received(self, chunk: bytes) -> None:
        if self.failed or self.writer is None:
            return
        self.received += len(chunk)
        if self.received > self.limit:
            await self._fail(ApiError("upload_too_large", f"a part is at most {self.limit} bytes"))
            return
        try:
            await self.run(self.writer.write, chunk)
        except OSError as exc:  # StorageUnavailable is not an OSError; it fails the write too
            logger.warning("upload %s: part write failed: %s", self.request_id, exc)
            await self._fail(ApiError("storage_unavailable", "storage cannot take the part now"))

    async def put(self, bucket: str, upload_id: str, number: str) -> None:
        if self.failed or self.writer is None:
            return
        if self.received != self.expected:
            await self._fail(ApiError("bad_request", "the body is shorter than Content-Length"))
            return
        writer, self.writer = self.writer, None
        try:
            await self.run(writer.commit)
        except FileNotFoundError:
            raise ApiError("no_such_upload", "the upload was completed or aborted meanwhile") \
                from None
        logger.info("upload %s: part %s stored (%d bytes, ETag %s)", upload_id, number,
                    self.received, writer.etag)
        self.set_header("ETag", writer.etag)
        self.finish()



def routes(services: Any) -> list[Any]:
    """The part route, when the storage driver has gateway parts (localdisk)."""
    if gateway_parts(services.storage) is None:
        return []
    return [(rf"{DIRECT_PREFIX}/([a-z]+)/([0-9a-f]{{32}})/([0-9]{{1,5}})", PartHandler,
             {"services": services})]
