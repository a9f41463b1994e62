"""The bundler's consumer: asset transfer events and accepted uploads.

Topics (consumer group ``bundler``):

- ``platform.asset-transfer``: ``sdc_asset_transfer_file_created`` and ``…_file_uploaded``
  (``file_name``, ``uncompressed_sha1_hash``, ``request_id``) create or complete the
  record of their content hash, in any order; ``…_uploads_complete`` is what the bundler
  itself publishes after bundling, and is ignored here.
- ``platform.upload.available``, service ``assets``: the gateway publishes it after it
  applied a success verdict and moved the object to perm, so it is the moment a transfer
  becomes bundleable. The verdict itself (``platform.upload.validation``) is not consumed:
  it comes before the move, and the state it leads to is read where the gateway decides it
  once, ``uploads.status`` of the transfer's request_id (a rejection shows as ``invalid``
  without any event).

Each message is recorded in one transaction that also marks the plans it touches pending;
the bundler's worker does the rest. Redelivered messages change nothing. Malformed ones
are skipped (``MalformedMessage``).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable

from bus import Message, topics
from consumer import records
from consumer.naming import parse_file_name
from consumer.records import TransferEvent
from core.consumer import MalformedMessage
from core.settings import Settings
from db import Database

logger = logging.getLogger(__name__)

ASSET_TRANSFER_TOPIC = topics.ASSET_TRANSFER
AVAILABLE_TOPIC = topics.AVAILABLE
TOPICS = (ASSET_TRANSFER_TOPIC, AVAILABLE_TOPIC)
ASSET_SERVICE = "assets"
KINDS = {"sdc_asset_transfer_file_created": "created", "sdc_asset_transfer_file_uploaded": "uploaded"}
IGNORED = ("sdc_asset_transfer_uploads_complete",)
SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_FILE_NAME = 1024


def parse_transfer_event(data: dict[str, Any]) -> TransferEvent | None:
    """The file event in ``data``; None for a type the bundler ignores."""
    kind = data.get("type")
    if not isinstance(kind, str):  # a list or an object is no type (and is unhashable)
        raise MalformedMessage(f"asset transfer event type is not a string: {kind!r}"[:300])
    if kind in IGNORED:
        return None
    if kind not in KINDS:
        raise MalformedMessage(f"unknown asset transfer event type {kind!r}")
    file_name, sha1 = data.get("file_name"), data.get("uncompressed_sha1_hash")
    request_id = data.get("request_id")
    if not isinstance(file_name, str) or not file_name.strip() or len(file_name) > MAX_FILE_NAME \
            or "\x00" in file_name:
        raise MalformedMessage("file_name missing, empty or too long")
    if not isinstance(sha1, str) or not SHA1.match(sha1):
        raise MalformedMessage("uncompressed_sha1_hash is not a sha1 in hex")
    if request_id is not None and (not isinstance(request_id, str) or not REQUEST_ID.match(request_id)):
        raise MalformedMessage("request_id is not a short id")
    return TransferEvent(KINDS[kind], file_name, sha1.lower(), request_id)


class TransferEvents:
    """The handler ``core.consumer.ConsumerLoop`` calls for each message."""

    def __init__(self, settings: Settings, database: Database,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.pattern = settings.asset_name_pattern
        self.database = database
        self.on_change = on_change

    def __call__(self, data: dict[str, Any], message: Message) -> None:
        if message.topic == AVAILABLE_TOPIC:
            self.upload_available(data)
        else:
            self.transfer_event(data)

    def transfer_event(self, data: dict[str, Any]) -> None:
        event = parse_transfer_event(data)
        if event is None:
            logger.debug("request_id=%s %s ignored", data.get("request_id"), data.get("type"))
            return
        parsed = parse_file_name(event.file_name, self.pattern)
        with self.database.engine.begin() as conn:
            changed, plan_uuid = records.record_event(conn, event, parsed)
        if not changed:
            logger.info("request_id=%s file %s sha1 %s: %s event already recorded",
                        event.request_id, event.file_name, event.sha1, event.kind)
            return
        if not parsed.matched:
            logger.warning("request_id=%s file %s recorded as unmatched: %s", event.request_id,
                           event.file_name, parsed.unmatched_reason)
        logger.info("request_id=%s file %s sha1 %s %s%s", event.request_id, event.file_name,
                    event.sha1, event.kind, f" (plan={plan_uuid})" if plan_uuid else "")
        if plan_uuid:
            self.on_change()

    def upload_available(self, data: dict[str, Any]) -> None:
        if data.get("service") != ASSET_SERVICE:
            return
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            raise MalformedMessage("available message without a request_id")
        with self.database.engine.begin() as conn:
            touched = records.touch_plans_of_request(conn, request_id)
        logger.info("request_id=%s asset upload available%s", request_id,
                    f"; plans {', '.join(touched)} to check" if touched else "")
        if touched:
            self.on_change()
