"""Upload handler: streams a multipart body into quarantine and answers 202 only once the
payload and its announcement are durable (see core.ingest)."""
from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

from sqlalchemy.exc import DBAPIError, IntegrityError
from tornado.http1connection import HTTP1Connection
from tornado.web import stream_request_body

from bus import BusUnavailable
from core import logs, metrics
from core.ingest import Payload, PayloadWriter
from core.intake import clean_filename, request_id_from, traceparent_from
from storage import StorageUnavailable
from upload.base import ApiHandler, Services
from upload.errors import ApiError
from upload.identity import Identity, parse_identity
from upload.multipart import MultipartStream, route

logger = logging.getLogger(__name__)

# room for part headers, boundaries and the metadata part around the file itself
ENVELOPE = 1024 * 1024


@stream_request_body
class UploadHandler(ApiHandler):
    def initialize(self, services: Services) -> None:
        super().initialize(services)
        self.started = time.monotonic()
        self.writer: PayloadWriter | None = None
        self.stream: MultipartStream | None = None
        self.identity: Identity | None = None
        self.request_id = ""
        self.body_bytes = 0
        self.failed = False
        self.service = "unknown"
        self.counted = True
        self.traceparent: str | None = None
        self._log_context: tuple[Any, Any] | None = None
        services.inflight += 1

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.services.inflight -= 1

    def on_finish(self) -> None:
        self._uncount()
        if self._log_context is not None:
            try:
                logs.request_id_var.reset(self._log_context[0])
                logs.traceparent_var.reset(self._log_context[1])
            except ValueError:  # finished from another context: nothing of ours is left there
                pass
            self._log_context = None

    async def prepare(self) -> None:
        self.check_method()
        settings = self.services.settings
        headers = self.request.headers
        self.request_id = request_id_from(headers.get("x-rh-insights-request-id"),
                                          headers.get("X-Request-ID"))
        self.traceparent = traceparent_from(headers.get("traceparent"))
        self._log_context = (logs.request_id_var.set(self.request_id),
                             logs.traceparent_var.set(self.traceparent))
        self.set_header("X-Request-ID", self.request_id)
        self.identity = parse_identity(self.request.headers.get("x-rh-identity"))
        if self.identity is None and settings.identity_required:
            raise ApiError("identity_required", "a valid x-rh-identity header is required")
        content_type = self.request.headers.get("Content-Type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise ApiError("unsupported_media_type", "the body must be multipart/form-data")
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > settings.max_length + ENVELOPE:
            raise ApiError("upload_too_large",
                           f"payload exceeds the limit of {settings.max_length} bytes")
        connection = cast(HTTP1Connection, self.request.connection)
        connection.set_max_body_size(settings.max_length + 2 * ENVELOPE)
        self.stream = MultipartStream(self.request.headers)

    async def data_received(self, chunk: bytes) -> None:
        if self.failed or self._finished:
            return
        try:
            await self._consume(chunk)
        except ApiError as exc:
            await self._fail(exc)
        except (StorageUnavailable, OSError) as exc:
            logger.warning("request_id=%s storage failed mid-upload: %s", self.request_id, exc)
            await self._fail(ApiError("storage_unavailable", "storage cannot take the payload now"))

    async def _consume(self, chunk: bytes) -> None:
        assert self.stream is not None
        self.body_bytes += len(chunk)
        limit = self.services.settings.max_length
        if self.body_bytes > limit + ENVELOPE:
            raise ApiError("upload_too_large", f"payload exceeds the limit of {limit} bytes")
        self.stream.feed(chunk)
        part = self.stream.file
        if part is None or (self.writer is None and self.stream.is_test):
            if part is not None:
                part.take()  # a connection test: the file is not stored
            return
        if self.writer is None:
            await self._open(part.multipart_content_type, part.multipart_filename)
        assert self.writer is not None
        for data in part.take():
            await self.writer.write(data)
        if self.writer.size > limit:
            raise ApiError("upload_too_large", f"payload exceeds the limit of {limit} bytes")

    async def _open(self, content_type: str | None, filename: str | None) -> None:
        routed = route(content_type, self.services.settings.valid_upload_types)
        self.service = routed.service
        identity = self.identity
        payload = Payload(
            request_id=self.request_id, service=routed.service, category=routed.category,
            content_type=routed.content_type, filename=clean_filename(filename),
            account=identity.account if identity else None,
            org_id=identity.org_id if identity else None,
            principal=identity.principal if identity else None,
            b64_identity=identity.raw if identity else None,
            extra={"traceparent": self.traceparent} if self.traceparent else {},
        )
        self.writer = self.services.ingestor.open(payload)

    async def _fail(self, error: ApiError) -> None:
        """Answer now, remove partial data, ignore the rest of the body."""
        self.failed = True
        await self._abort()
        metrics.UPLOADS.labels(self.service, error.code).inc()
        logger.info("request_id=%s rejected: %s (%s)", self.request_id, error.code, error.message)
        self.send_error(error.status_code, exc_info=(type(error), error, None))

    async def _abort(self) -> None:
        if self.writer is not None:
            try:
                await self.writer.abort()
            except Exception:  # noqa: BLE001 - cleanup at start-up removes what is left
                logger.exception("request_id=%s could not remove partial data", self.request_id)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._uncount()
        if self.writer is not None and not self._finished:
            logger.info("request_id=%s client went away mid-upload", self.request_id)
            self.failed = True
            self.services.spawn(self._abort())

    async def post(self) -> None:
        if self.failed:
            return
        try:
            await self._complete()
        except ApiError as exc:
            await self._fail(exc)

    async def _complete(self) -> None:
        assert self.stream is not None
        part = self.stream.file
        if not self.stream.complete:
            raise ApiError("malformed_multipart", "the multipart body has no closing boundary")
        if self.stream.is_test:
            await self._answer_test()
            return
        if part is None or self.writer is None:
            raise ApiError("missing_file", "no file part named 'file' or 'upload'")
        if not part.finished:
            raise ApiError("malformed_multipart", "the multipart body ended inside the file part")
        self.writer.payload.metadata = _metadata(self.stream.metadata_bytes())
        try:
            announcement = await self.services.ingestor.finish(self.writer)
        except IntegrityError:
            raise ApiError("duplicate_request_id",
                           f"request id {self.request_id} was already used") from None
        except (StorageUnavailable, BusUnavailable, DBAPIError, OSError) as exc:
            logger.warning("request_id=%s could not be stored: %s", self.request_id, exc)
            raise ApiError("storage_unavailable", "storage cannot take the payload now") from None
        self.writer = None
        metrics.UPLOADS.labels(self.service, "accepted").inc()
        metrics.REQUEST_SECONDS.labels("accepted").observe(time.monotonic() - self.started)
        self.set_status(202)
        self.write_json({
            "request_id": self.request_id,
            "upload": {"account_number": announcement["account"],
                       "org_id": announcement["org_id"]},
        })


    async def _answer_test(self) -> None:
        """``test=test`` (insights-client's connection test): 200 with the usual body;
        whatever was streamed is removed, nothing is recorded or announced."""
        await self._abort()
        self.writer = None
        identity = self.identity
        metrics.UPLOADS.labels(self.service, "test").inc()
        logger.info("request_id=%s connection test (test=test): nothing stored", self.request_id)
        self.set_status(200)
        self.write_json({
            "request_id": self.request_id,
            "upload": {"account_number": identity.account if identity else None,
                       "org_id": identity.org_id if identity else None},
        })


def _metadata(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ApiError("malformed_metadata", "metadata part is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError("malformed_metadata", "metadata must be a JSON object")
    return value

