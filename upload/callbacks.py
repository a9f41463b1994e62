"""``POST /api/v1/callbacks/<request_id>?code=…``: a validator that cannot reach the bus
posts its verdict, ``{"validation": "success"|"failure"|"handoff", "reason": …}`` (JSON;
other fields are carried along as in a Kafka verdict), to the announcement's one-time
``callback_url`` (see core/callbacks.py).

200 ``{"request_id", "validation", "status"}`` once recorded; 403 ``forbidden`` for a
forged, expired or used code (nothing changes); 409 ``already_decided`` when the upload was
decided before (by a Kafka verdict or ``VALIDATION_TIMEOUT``): the late verdict is logged
and ignored; 400 ``bad_request`` for a body that is not a verdict; 413
``verdict_too_large`` for an ``id`` over 1 KiB or a verdict over 64 KiB (JSON; a ``reason``
over 4,096 characters is cut, see core/verdicts.py); 404 ``not_found``.
"""
from __future__ import annotations

import asyncio
import json
import logging

from core.callbacks import CallbackRecorder
from core.consumer import TRANSIENT, MalformedMessage
from core.verdicts import VerdictHandler, VerdictTooLarge
from upload.base import ApiHandler, Services
from upload.errors import ApiError

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


class CallbackHandler(ApiHandler):
    def initialize(self, services: Services) -> None:
        super().initialize(services)
        verdicts = VerdictHandler(services.settings, services.storage, services.database,
                                  services.relay.wake)
        self.recorder = CallbackRecorder(services.settings.url_signing_key,
                                         services.database, verdicts)

    async def post(self, request_id: str) -> None:
        self.request_id = request_id
        if len(self.request.body) > MAX_BODY:
            raise ApiError("verdict_too_large", f"a verdict is at most {MAX_BODY} bytes")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise ApiError("bad_request", "the body must be a JSON verdict") from None
        if not isinstance(body, dict):
            raise ApiError("bad_request", "the body must be a JSON object")
        code = self.get_query_argument("code", None)
        loop = asyncio.get_running_loop()
        try:
            outcome, status = await loop.run_in_executor(
                self.services.executor, self.recorder.record, request_id, code, body)
        except VerdictTooLarge as exc:
            raise ApiError("verdict_too_large", str(exc)) from None
        except MalformedMessage as exc:
            raise ApiError("bad_request", str(exc)) from None
        except TRANSIENT as exc:
            logger.warning("request_id=%s callback verdict not recorded: %s", request_id, exc)
            raise ApiError("service_unavailable", "cannot record the verdict now; retry") from None
        if outcome == "forbidden":
            raise ApiError("forbidden", "forged, expired or already used callback code")
        if outcome == "not_found":
            raise ApiError("not_found", f"no upload {request_id}")
        if outcome == "already_decided":
            raise ApiError("already_decided", f"upload {request_id} is already {status}")
        self.write_json({"request_id": request_id, "validation": body["validation"],
                         "status": status})
