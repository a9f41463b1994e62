"""What every area handler shares: the scope check, the executor, JSON bodies, and the
translation of ``AreaError`` into the API's error codes."""
from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from areas.names import name_problem
from areas.store import AreaError
from auth import authorize
from upload.base import ApiHandler
from upload.errors import ApiError

T = TypeVar("T")

AREA_ID = r"([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
UUID = re.compile(AREA_ID)


class Abortable(Protocol):
    def abort(self) -> None: ...


class StreamedBody(ApiHandler):
    """A handler whose streamed body goes to a storage writer (``self.writer``, opened in
    ``prepare``): a failure, a closed connection or a request refused before its body
    aborts the writer, so nothing half-written stays. Subclasses set ``writer`` and
    ``failed`` in ``initialize`` and run blocking calls through ``run``."""

    writer: Abortable | None
    failed: bool

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor, functools.partial(func, *args))

    async def _fail(self, error: ApiError) -> None:
        self.failed = True
        await self._abort()
        self.send_error(error.status_code, exc_info=(type(error), error, None))

    async def _abort(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            await self.run(writer.abort)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.writer is not None:
            self.failed = True
            self.services.spawn(self._abort())

    def on_finish(self) -> None:
        if self.writer is not None:  # refused before the body (an error in prepare)
            self.services.spawn(self._abort())


class AreaHandler(ApiHandler):
    """Base of the area API's handlers. Every request needs an API key with the scope
    ``areas`` (``auth.web.authorize`` in ``prepare``)."""

    scope = "areas"

    async def prepare(self) -> None:
        """405 for a method the handler lacks, then the scope check (auth/): 401 without
        credentials, 403 without the scope; either finishes the request, and Tornado then
        calls no method (a streamed body is not read)."""
        self.check_method()
        if self.request.method == "PUT":
            # a refusal comes before the body is read: Tornado closes the connection
            # after the answer, which the client must not reuse
            self.set_header("Connection", "close")
        if await authorize(self, self.scope):
            self.clear_header("Connection")

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.services.executor,
                                              functools.partial(func, *args))
        except AreaError as exc:
            raise ApiError(exc.code, exc.message) from None

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except (ValueError, RecursionError):
            raise ApiError("bad_request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError("bad_request", "the body must be a JSON object")
        return body


def area_id_of(raw: str) -> str:
    return raw.lower()


def checked_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise ApiError("bad_name", problem)
    return name
