"""The upload areas' topics and the work messages on them.

- ``platform.upload.area-checksum``: ``{"type": "checksum", area_id, name, version,
  object_key, part_size}``, one per stored file version; the checksum workers (role
  ``checksummer``) compute its checksums in one pass (areas/worker.py).
- ``platform.upload.area-work``: ``{"type": "validate", area_id, validation_id}`` and
  ``{"type": "delete", area_id}``, run by the same role on a consumer of its own, so that
  a long validation never holds up checksums.
- ``platform.upload.area-events``: a notification for each change of an area or of one of
  its files: ``area_id``, ``event`` (``created``, ``locked``, ``open``, ``deleting``,
  ``deleted``, ``file_stored``, ``checksummed``, ``checksum_mismatch``, ``validating``,
  ``validated``, ``validation_failed``, ``submitted``), ``file`` and ``version`` when it
  is about one file, ``counts`` (files per checksum and validation state) and ``at``.

Every message is put in the outbox in the transaction that makes its change (at least
once); the workers are idempotent (areas/store.py records results by version).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from db import OutboxItem

if TYPE_CHECKING:
    from areas.store import FileVersion

CHECKSUM_TOPIC = "platform.upload.area-checksum"
WORK_TOPIC = "platform.upload.area-work"
AREA_EVENTS = "platform.upload.area-events"
TOPICS = (CHECKSUM_TOPIC, WORK_TOPIC, AREA_EVENTS)


def checksum_job(file: FileVersion) -> OutboxItem:
    return OutboxItem(CHECKSUM_TOPIC, file.area_id, {
        "type": "checksum", "area_id": file.area_id, "name": file.name,
        "version": file.version, "object_key": file.object_key, "part_size": file.part_size})


def delete_job(area_id: str) -> OutboxItem:
    return OutboxItem(WORK_TOPIC, area_id, {"type": "delete", "area_id": area_id})


def validate_job(area_id: str, validation_id: str) -> OutboxItem:
    return OutboxItem(WORK_TOPIC, area_id, {"type": "validate", "area_id": area_id,
                                            "validation_id": validation_id})
