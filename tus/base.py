"""What every tus request shares: protocol headers on every answer, CORS, the method
override, identity, loading an upload with its ownership checks, leases, and streaming a
request body into a resumable session."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
from typing import Any, Callable, TypeVar

import tornado.web
from sqlalchemy.exc import DBAPIError

from bus import BusUnavailable
from core.intake import Identity, IntakeError, parse_identity
from core.resumable import LeaseLost, Session, SessionPipe
from core.services import Services
from storage import StorageUnavailable
from tus import protocol
from tus.protocol import TusError

logger = logging.getLogger(__name__)

T = TypeVar("T")
LEASE_WAIT = 2.0  # a request for an upload another request holds waits this long, then 423
TRANSIENT = (StorageUnavailable, BusUnavailable, DBAPIError, OSError)


class TusBase(tornado.web.RequestHandler):
    def initialize(self, services: Services) -> None:
        self.services = services
        self.settings_ = services.settings
        assert services.resumable is not None
        self.resumable = services.resumable
        self.identity: Identity | None = None
        self.request_id = "-"
        self.token = secrets.token_hex(16)
        self.leased: str | None = None  # the upload whose lease this request holds
        self.session: Session | None = None
        self.pipe: SessionPipe | None = None
        self.limit = 0
        self.length: int | None = None
        self.checksum: protocol.Checksum | None = None
        self.failed = False
        self.body_done = False
        self.feeding = asyncio.Lock()  # data_received and a disconnect never feed at once
        self.set_default_headers()  # Tornado set them once already, before services were known

    # answers ------------------------------------------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header("Tus-Resumable", protocol.VERSION)
        self.set_header("Cache-Control", "no-store")
        services = getattr(self, "services", None)
        origin = self.request.headers.get("Origin")
        allowed = services.settings.tus_cors_origins if services is not None else ()
        if origin and ("*" in allowed or origin in allowed):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
            self.set_header("Access-Control-Expose-Headers", ", ".join(protocol.RESPONSE_HEADERS))

    def describe_server(self) -> None:
        self.set_header("Tus-Version", protocol.VERSION)
        self.set_header("Tus-Extension", ",".join(protocol.EXTENSIONS))
        self.set_header("Tus-Max-Size", str(self.services.settings.max_length))
        self.set_header("Tus-Checksum-Algorithm", ",".join(protocol.CHECKSUMS))

    def options(self, *_args: str) -> None:
        """Server capabilities; also the CORS preflight of browser clients."""
        self.describe_server()
        if self.request.headers.get("Access-Control-Request-Method"):
            self.set_header("Access-Control-Allow-Methods",
                            "POST, HEAD, PATCH, DELETE, OPTIONS")
            self.set_header("Access-Control-Allow-Headers", ", ".join(protocol.REQUEST_HEADERS))
            self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, TusError):
            code, message = error.code, error.message
        elif status_code == 405:
            code, message = "method_not_allowed", "method not allowed on this tus resource"
        else:
            code = "bad_request" if status_code < 500 else "internal_error"
            message = self._reason if status_code < 500 else "internal error"
        if status_code == 412:
            self.set_header("Tus-Version", protocol.VERSION)
        if self.request.method == "HEAD":
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": code, "message": message}))

    def fail(self, error: TusError) -> None:
        logger.info("request_id=%s tus %s refused: %s (%s)", self.request_id,
                    self.request.method, error.code, error.message)
        self.failed = True
        if not self._finished:
            self.set_status(error.status, reason=_reason(error))
            self.write_error(error.status, exc_info=(type(error), error, None))

    # requests ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        override = self.request.headers.get("X-HTTP-Method-Override")
        if override:
            if override.upper() not in ("PATCH", "DELETE", "HEAD", "POST", "OPTIONS"):
                raise TusError("bad_header", "X-HTTP-Method-Override names no tus method")
            self.request.method = override.upper()
        if self.request.method != "OPTIONS":
            version = self.request.headers.get("Tus-Resumable")
            if version != protocol.VERSION:
                raise TusError("unsupported_version",
                               f"Tus-Resumable must be {protocol.VERSION}, got {version!r}")
        try:
            self.identity = parse_identity(self.request.headers.get("x-rh-identity"))
        except IntakeError as exc:
            raise TusError(exc.code, exc.message) from None

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, TusError):
            if self.leased is not None:
                self.services.spawn(self.give_back())
            self.fail(e)
            return
        if isinstance(e, TRANSIENT):
            logger.warning("request_id=%s tus %s: %s", self.request_id, self.request.method, e)
            if self.leased is not None:
                self.services.spawn(self.give_back())
            self.fail(TusError("storage_unavailable", "storage cannot take the upload now"))
            return
        super()._handle_request_exception(e)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor,
                                          functools.partial(func, *args))

    def visible(self, row: dict[str, Any]) -> bool:
        """An upload made with an identity is only for that identity's org (account)."""
        if row["account"] is None and row["org_id"] is None:
            return True
        if self.identity is None:
            return False
        if self.identity.org_id is not None:
            return bool(self.identity.org_id == row["org_id"])
        return bool(self.identity.account == row["account"])

    async def load(self, tus_id: str) -> dict[str, Any]:
        """The upload, for this caller: 404 unknown (or another org's), 410 ended."""
        row = await self.run(self.services.database.get_tus, tus_id)
        if row is None or not self.visible(row):
            raise TusError("not_found", f"no upload {tus_id}")
        self.request_id = row["request_id"] or "-"
        if row["state"] in ("terminated", "expired"):
            raise TusError("upload_gone", f"upload {tus_id} was {row['state']}")
        return row

    async def lease(self, tus_id: str, states: tuple[str, ...] = ("receiving", "complete")
                    ) -> dict[str, Any]:
        """Take the upload's lease, waiting up to ``LEASE_WAIT`` for another request to
        give it back; 423 after that."""
        deadline = asyncio.get_running_loop().time() + LEASE_WAIT
        while True:
            row = await self.run(self.resumable.acquire, tus_id, self.token, states)
            if row is not None:
                self.leased = tus_id
                return row
            if asyncio.get_running_loop().time() >= deadline:
                raise TusError("upload_locked", f"upload {tus_id} is being written by "
                               "another request; retry later")
            await asyncio.sleep(0.1)

    async def give_back(self) -> None:
        """Release the lease without recording anything (the request failed)."""
        session, self.session = self.session, None
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            await pipe.settle()
        if session is not None:
            await self.run(session.close)
        leased, self.leased = self.leased, None
        if leased is not None:
            try:
                await self.run(self.resumable.release, leased, self.token)
            except Exception:  # noqa: BLE001 - the lease expires by itself
                logger.warning("request_id=%s could not release upload %s", self.request_id,
                               leased, exc_info=True)

    # bodies --------------------------------------------------------------------------------

    async def open_body(self, row: dict[str, Any], length: int | None,
                        checksum: protocol.Checksum | None) -> None:
        """Start writing this request's body into the leased upload ``row``."""
        self.session = await self.run(self.resumable.open, row, self.token,
                                      checksum.hasher() if checksum else None)
        self.session.length = self.length = length
        self.checksum = checksum
        ceiling = length if length is not None else self.services.settings.max_length
        self.limit = ceiling - row["upload_offset"]
        self.pipe = SessionPipe(self.session, self.services.executor)

    async def data_received(self, chunk: bytes) -> None:
        if self.pipe is None or self.failed or self._finished:
            return
        if self.pipe.received + len(chunk) > self.limit:
            await self.give_back()
            self.fail(TusError("upload_too_large", "the body goes past the upload's length"))
            return
        try:
            async with self.feeding:
                if self.pipe is None or self.failed:
                    return
                await self.pipe.write(chunk)
        except LeaseLost as exc:
            await self.give_back()
            self.fail(TusError("upload_locked", str(exc)))
        except TRANSIENT as exc:
            logger.warning("request_id=%s storage failed mid-upload: %s", self.request_id, exc)
            await self.give_back()
            self.fail(TusError("storage_unavailable", "storage cannot take the upload now"))

    async def close_body(self) -> int:
        """The whole body arrived: verify its checksum, checkpoint it, finish the upload
        when it is complete. Returns the new offset."""
        assert self.pipe is not None and self.session is not None
        self.body_done = True  # from here a disconnect changes nothing: this request records
        await self.pipe.drain()
        session = self.session
        if self.checksum is not None and (session.checksum is None
                                          or session.checksum.digest() != self.checksum.digest):
            await self.give_back()
            raise TusError("checksum_mismatch", f"the body's {self.checksum.algorithm} does not "
                           "match Upload-Checksum; it was discarded")
        try:
            complete = await self.run(session.checkpoint, True)
        except LeaseLost as exc:
            await self.give_back()
            raise TusError("upload_locked", str(exc)) from None
        self.session = self.pipe = None
        await self.run(session.close)
        if complete:
            await self.run(self.resumable.finish, session.row, self.token)
        self.leased = None
        return session.offset

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.pipe is not None and not self._finished and not self.failed \
                and not self.body_done:
            self.failed = True
            self.services.spawn(self._keep_what_arrived())

    async def _keep_what_arrived(self) -> None:
        """The client went away mid-body: keep the bytes that arrived (tus: store as much
        as possible), unless a checksum was promised for the whole body."""
        async with self.feeding:  # a chunk being fed when the connection closed goes first
            await self._keep()

    async def _keep(self) -> None:
        pipe, session = self.pipe, self.session
        if pipe is None or session is None or self.checksum is not None:
            await self.give_back()
            return
        try:
            await pipe.drain()
            self.session = self.pipe = None
            complete = await self.run(session.checkpoint, True)
            await self.run(session.close)
            if complete:
                await self.run(self.resumable.finish, session.row, self.token)
            self.leased = None
            logger.info("request_id=%s client went away; kept %d bytes (offset %d)",
                        self.request_id, pipe.received, session.offset)
        except Exception:  # noqa: BLE001 - nothing recorded: the next request resumes earlier
            logger.warning("request_id=%s client went away; nothing kept", self.request_id,
                           exc_info=True)
            self.session, self.pipe = session, None
            await self.give_back()

    def upload_url(self, tus_id: str) -> str:
        prefix = self.request.path.split("/tus", 1)[0]
        return f"{self.request.protocol}://{self.request.host}{prefix}/tus/{tus_id}"


def _reason(error: TusError) -> str | None:
    return {460: "Checksum Mismatch", 423: "Locked"}.get(error.status)
