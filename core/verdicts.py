"""Verdicts on ``platform.upload.validation``: promote, reject or hand off a payload.

success → the object moves quarantine → perm, the upload is ``validated``, and the
announcement (with ``url`` now a signed URL of the permanent object, plus the validator's
``id``) goes to ``platform.upload.available``; ``available`` is recorded once delivered.
failure → the object moves to reject. handoff → the object stays where it is; the validator
owns it now and may send a final verdict later.

Idempotent: the storage move is idempotent and the database decides each upload once, so a
redelivered verdict changes nothing. An unknown request_id is logged, counted, skipped.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any, Callable

from bus import Message
from core import metrics
from core.consumer import MalformedMessage
from core.settings import Settings
from db import OPEN_FOR_VERDICT, VERDICT_STATUS, Database, OutboxItem, as_utc, utcnow
from storage import Storage

logger = logging.getLogger(__name__)

VALIDATION_TOPIC = "platform.upload.validation"
AVAILABLE_TOPIC = "platform.upload.available"
DESTINATION = {"success": "perm", "failure": "reject"}


def parse_verdict(data: dict[str, Any]) -> tuple[str, str, str | None]:
    request_id = data.get("request_id")
    verdict = data.get("validation")
    reason = data.get("reason")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 64:
        raise MalformedMessage("request_id missing or not a short string")
    if not isinstance(verdict, str) or verdict not in VERDICT_STATUS:
        raise MalformedMessage(f"validation must be success, failure or handoff, got {verdict!r}"[:300])
    if reason is not None and not isinstance(reason, str):
        reason = json.dumps(reason)
    return request_id, verdict, reason


def available_message(upload: dict[str, Any], url: str, verdict: dict[str, Any]) -> dict[str, Any]:
    message = {
        "request_id": upload["request_id"],
        "payload_id": upload["request_id"],
        "service": upload["service"],
        "category": upload["category"],
        "content_type": upload["content_type"],
        "size": upload["size"],
        "url": url,
        "account": upload["account"],
        "org_id": upload["org_id"],
        "principal": upload["principal"],
        "b64_identity": upload["b64_identity"],
        "metadata": json.loads(upload["metadata"] or "{}"),
        "checksums": {"sha256": upload["sha256"]},
        "mime": upload["mime"],
        "filename": upload["filename"],
        "timestamp": as_utc(upload["created_at"]).isoformat(),
    }
    if upload.get("compression"):
        message["compression"] = upload["compression"]
    if "id" in verdict:
        message["id"] = verdict["id"]
    return message


class VerdictHandler:
    def __init__(self, settings: Settings, storage: Storage, database: Database,
                 on_recorded: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.storage = storage
        self.database = database
        self._on_recorded = on_recorded

    def __call__(self, data: dict[str, Any], message: Message | None = None) -> None:
        request_id, verdict, reason = parse_verdict(data)
        upload = self.database.get_upload(request_id)
        if upload is None:
            metrics.VERDICTS.labels("unknown", "unknown_request").inc()
            logger.warning("request_id=%s verdict %s for an unknown upload; skipped",
                           request_id, verdict)
            return
        if upload["status"] not in OPEN_FOR_VERDICT or (
            verdict == "handoff" and upload["status"] == "handed_off"
        ):
            late = upload["status"] == "rejected" and upload["reason"] == "timeout"
            metrics.VERDICTS.labels(upload["service"], "late" if late else "duplicate").inc()
            logger.info("request_id=%s verdict %s ignored: already %s%s", request_id, verdict,
                        upload["status"], " (validation timed out)" if late else "")
            return
        self._apply(upload, verdict, reason, data)

    def _apply(self, upload: dict[str, Any], verdict: str, reason: str | None,
               data: dict[str, Any]) -> None:
        request_id, key = upload["request_id"], upload["object_key"]
        started = time.monotonic()
        destination = DESTINATION.get(verdict)
        if destination:
            try:
                self.storage.move("quarantine", destination, key)
            except FileNotFoundError:
                logger.error("request_id=%s object %s is missing from storage; rejecting",
                             request_id, key)
                verdict, reason, destination = "failure", "payload missing from storage", None
        messages = []
        if verdict == "success":
            url = self.storage.signed_url("perm", key, self.settings.url_expiry)
            messages.append(OutboxItem(AVAILABLE_TOPIC, request_id,
                                       available_message(upload, url, data),
                                       request_id=request_id, on_sent_status="available"))
        details = {k: v for k, v in data.items() if k not in ("request_id", "validation", "reason")}
        result = self.database.apply_verdict(request_id, verdict, reason, details, messages)
        metrics.VERDICTS.labels(upload["service"], verdict if result == "applied" else result).inc()
        metrics.STAGE_SECONDS.labels("verdict").observe(time.monotonic() - started)
        waited = (utcnow() - as_utc(upload["created_at"])).total_seconds()
        metrics.STAGE_SECONDS.labels("upload_to_verdict").observe(waited)
        metrics.CONSUMER_LAG.labels("upload-gateway").set(waited)
        logger.info("request_id=%s verdict %s (%s)%s", request_id, verdict, result,
                    f": {reason}" if reason else "")
        self._on_recorded()


class TimeoutSweeper:
    """Rejects, with reason ``timeout``, payloads that got no verdict within
    ``VALIDATION_TIMEOUT`` seconds (handed-off payloads belong to their validator and are
    left alone). It goes through the verdict path, so a verdict arriving later is a
    duplicate: logged and ignored."""

    def __init__(self, handler: VerdictHandler, timeout: int) -> None:
        self.handler = handler
        self.timeout = timeout
        self.interval = max(0.5, min(60.0, timeout / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="timeout-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - try again next round
                logger.exception("timeout sweep failed")

    def sweep(self) -> int:
        cutoff = utcnow() - dt.timedelta(seconds=self.timeout)
        overdue = self.handler.database.overdue(cutoff)
        for request_id in overdue:
            logger.warning("request_id=%s no verdict within %ds; rejecting", request_id,
                           self.timeout)
            self.handler({"request_id": request_id, "validation": "failure",
                          "reason": "timeout"})
            upload = self.handler.database.get_upload(request_id)
            if upload and upload["status"] == "rejected" and upload["reason"] == "timeout":
                metrics.VALIDATION_TIMEOUTS.labels(upload["service"]).inc()
        return len(overdue)
