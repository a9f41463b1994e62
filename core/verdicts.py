"""Verdicts on ``platform.upload.validation``: promote, reject or hand off a payload.

success → the object moves quarantine → perm, the upload is ``validated``, and the
announcement (with ``url`` now a signed URL of the permanent object, plus the validator's
``id``) goes to ``platform.upload.available``; ``available`` is recorded once delivered.
failure → the object moves to reject. handoff → the object stays where it is; the validator
owns it now and may send a final verdict later.

Idempotent: the storage move is idempotent and the database decides each upload once, so a
redelivered verdict changes nothing. An unknown request_id is logged, counted, skipped.

Batches (``handle_batch``, what the consumer loop has polled at once): one look-up of the
uploads, the storage moves together (``Storage.move_many``: localdisk syncs them together,
S3 copies them concurrently and deletes the sources in one request), one transaction for
every verdict, in order. ``gateway_stage_duration_seconds{stage="verdict"}`` is the cost
per payload (a batch's time over its size), ``stage="verdict_batch"`` a whole batch's.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any, Callable, Sequence

from bus import Message, topics
from core import metrics
from core.checksums import describe_upload, served_name
from core.consumer import MalformedMessage
from core.periodic import Periodic
from core.settings import Settings
from db import OPEN_FOR_VERDICT, VERDICT_STATUS, Database, OutboxItem, as_utc, utcnow
from storage import Storage, StorageUnavailable

logger = logging.getLogger(__name__)

VALIDATION_TOPIC = topics.VALIDATION
AVAILABLE_TOPIC = topics.AVAILABLE
DESTINATION = {"success": "perm", "failure": "reject"}


# What a verdict carries is stored with the upload and travels on in the `available`
# and status messages, so it stays far below the bus's message size limit (1 MB).
MAX_REASON = 4096  # characters; a longer reason is cut, and says so
MAX_ID_BYTES = 1024  # the validator's `id`, JSON-encoded
MAX_VERDICT_BYTES = 64 * 1024  # the whole verdict, JSON-encoded
TRUNCATED = " [truncated]"


class VerdictTooLarge(MalformedMessage):
    """A verdict whose ``id`` or carried fields are over the limits: refused (HTTP 413,
    on the bus skipped as malformed)."""


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
    if reason is not None and len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON - len(TRUNCATED)] + TRUNCATED
    if "id" in data and len(json.dumps(data["id"])) > MAX_ID_BYTES:
        raise VerdictTooLarge(f"request_id={request_id} verdict id is over {MAX_ID_BYTES} "
                              "bytes (JSON)")
    carried = {k: v for k, v in data.items() if k != "reason"}
    if len(json.dumps(carried)) > MAX_VERDICT_BYTES:
        raise VerdictTooLarge(f"request_id={request_id} verdict fields are over "
                              f"{MAX_VERDICT_BYTES} bytes (JSON)")
    return request_id, verdict, reason


def available_message(upload: dict[str, Any], url: str, verdict: dict[str, Any]) -> dict[str, Any]:
    message = {
        "request_id": upload["request_id"],
        "payload_id": upload["request_id"],
        "service": upload["service"],
        "category": upload["category"],
        "content_type": upload["content_type"],
        "url": url,
        "account": upload["account"],
        "org_id": upload["org_id"],
        "principal": upload["principal"],
        # the Insights upload service's names, for its consumers
        "rh_account": upload["account"],
        "rh_principal": upload["principal"],
        "b64_identity": upload["b64_identity"],
        "metadata": json.loads(upload["metadata"] or "{}"),
        "mime": upload["mime"],
        "filename": upload["filename"],
        "timestamp": as_utc(upload["created_at"]).isoformat(),
        **describe_upload(upload),
    }
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
        # when (time.monotonic()) a validator's verdict last found the storage unavailable
        self.storage_failed_at: float | None = None

    def __call__(self, data: dict[str, Any], message: Message | None = None) -> None:
        self.handle_batch([data])

    def handle_batch(self, batch: Sequence[dict[str, Any]], received: bool = True) -> None:
        """Handle verdicts in order. ``MalformedMessage`` if any is malformed (before any
        side effect: the consumer loop then handles them one by one). ``received``: the
        verdicts came from a validator (not the timeout sweeper), so while the storage is
        unavailable their uploads' timelines say they wait for it."""
        verdicts = [(*parse_verdict(data), data) for data in batch]
        uploads = self.database.get_uploads([request_id for request_id, *_ in verdicts])
        todo: list[list[Any]] = []
        for request_id, verdict, reason, data in verdicts:
            upload = uploads.get(request_id)
            if self._open_for(upload, request_id, verdict):
                assert upload is not None
                todo.append([upload, verdict, reason, data])
                # a second verdict for it in this batch sees it decided (or handed off)
                uploads[request_id] = {**upload, "status": VERDICT_STATUS[verdict]}
        if todo:
            try:
                self._apply(todo)
            except StorageUnavailable as exc:
                if received:
                    self.storage_failed_at = time.monotonic()
                    self._waiting([upload["request_id"] for upload, *_ in todo], exc)
                raise

    def _waiting(self, request_ids: list[str], cause: StorageUnavailable) -> None:
        """The verdicts are retried by the consumer loop until the storage is back (a
        transient failure); the timelines say why they are not applied yet."""
        try:
            self.database.record_waiting(
                request_ids, f"verdict received; waiting for the storage ({cause})")
        except Exception as exc:  # noqa: BLE001 - the retry matters, not the note
            logger.warning("could not note %d verdicts waiting for the storage: %s",
                           len(request_ids), exc)

    def _open_for(self, upload: dict[str, Any] | None, request_id: str, verdict: str) -> bool:
        if upload is None:
            metrics.VERDICTS.labels("unknown", "unknown_request").inc()
            logger.warning("request_id=%s verdict %s for an unknown upload; skipped",
                           request_id, verdict)
            return False
        if upload["status"] not in OPEN_FOR_VERDICT or (
            verdict == "handoff" and upload["status"] == "handed_off"
        ):
            late = upload["status"] == "rejected" and upload["reason"] == "timeout"
            metrics.VERDICTS.labels(upload["service"], "late" if late else "duplicate").inc()
            logger.info("request_id=%s verdict %s ignored: already %s%s", request_id, verdict,
                        upload["status"], " (validation timed out)" if late else "")
            return False
        return True

    def _apply(self, todo: list[list[Any]]) -> None:
        """Move the objects (idempotent), then record every verdict in one transaction."""
        started = time.monotonic()
        moving = [item for item in todo if item[1] in DESTINATION]
        moves = [("quarantine", DESTINATION[verdict], upload["object_key"])
                 for upload, verdict, _, _ in moving]
        missing = self.storage.move_many(moves) if len(moves) > 1 else self._move(moves)
        for item, error in zip(moving, missing):
            if error is not None:
                logger.error("request_id=%s object %s is missing from storage; rejecting",
                             item[0]["request_id"], item[0]["object_key"])
                item[1:3] = "failure", "payload missing from storage"
        entries = [self._entry(*item) for item in todo]
        results = self.database.apply_verdicts(entries)
        elapsed = time.monotonic() - started
        metrics.STAGE_SECONDS.labels("verdict_batch").observe(elapsed)
        for (upload, verdict, reason, _), result in zip(todo, results):
            metrics.VERDICTS.labels(upload["service"],
                                    verdict if result == "applied" else result).inc()
            # the cost per payload: what the stage can keep up with is 1 / this
            metrics.STAGE_SECONDS.labels("verdict").observe(elapsed / len(todo))
            waited = (utcnow() - as_utc(upload["created_at"])).total_seconds()
            metrics.STAGE_SECONDS.labels("upload_to_verdict").observe(waited)
            metrics.CONSUMER_LAG.labels("upload-gateway").set(waited)
            logger.info("request_id=%s verdict %s (%s)%s", upload["request_id"], verdict,
                        result, f": {reason}" if reason else "")
        self._on_recorded()

    def _move(self, moves: list[tuple[str, str, str]]) -> list[FileNotFoundError | None]:
        try:
            for move in moves:
                self.storage.move(*move)
        except FileNotFoundError as exc:
            return [exc]
        return [None] * len(moves)

    def _entry(self, upload: dict[str, Any], verdict: str, reason: str | None,
               data: dict[str, Any]) -> tuple[Any, ...]:
        request_id, key = upload["request_id"], upload["object_key"]
        messages = []
        if verdict == "success":
            url = self.storage.signed_url("perm", key, self.settings.url_expiry,
                                          served_name(upload["filename"], upload["compression"]))
            messages.append(OutboxItem(AVAILABLE_TOPIC, request_id,
                                       available_message(upload, url, data),
                                       request_id=request_id, on_sent_status="available"))
        details = {k: v for k, v in data.items() if k not in ("request_id", "validation", "reason")}
        return request_id, verdict, reason, details, messages


# Seconds after a validator's verdict last found the storage unavailable during which the
# timeout sweeper rejects nothing: the consumer retries at most 10 s apart, then the
# verdicts queued behind need a moment to be applied.
STORAGE_PAUSE = 15.0


class TimeoutSweeper(Periodic):
    """Rejects, with reason ``timeout``, payloads that got no verdict within
    ``VALIDATION_TIMEOUT`` seconds (handed-off payloads belong to their validator and are
    left alone; so are payloads whose verdict came and waits for the storage, and while
    verdicts wait for it, nothing is rejected). It goes through the verdict path, so a
    verdict arriving later is a duplicate: logged and ignored."""

    name = "timeout-sweeper"

    def __init__(self, handler: VerdictHandler, timeout: int) -> None:
        super().__init__()
        self.handler = handler
        self.timeout = timeout
        self.interval = max(0.5, min(60.0, timeout / 4))

    def tick(self) -> None:
        self.sweep()

    def sweep(self) -> int:
        failed_at = self.handler.storage_failed_at
        if failed_at is not None and time.monotonic() - failed_at < STORAGE_PAUSE:
            # verdicts wait for the storage (and more may be queued behind them): a
            # timeout now would reject payloads whose verdict is on its way
            logger.info("timeouts paused: verdicts are waiting for the storage")
            return 0
        cutoff = utcnow() - dt.timedelta(seconds=self.timeout)
        overdue = self.handler.database.overdue(cutoff)
        for request_id in overdue:
            logger.warning("request_id=%s no verdict within %ds; rejecting", request_id,
                           self.timeout)
            self.handler.handle_batch([{"request_id": request_id, "validation": "failure",
                                        "reason": "timeout"}], received=False)
            upload = self.handler.database.get_upload(request_id)
            if upload and upload["status"] == "rejected" and upload["reason"] == "timeout":
                metrics.VALIDATION_TIMEOUTS.labels(upload["service"]).inc()
        return len(overdue)
