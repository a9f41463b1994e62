"""Rejected lab files made visible on the share (issue 13 item 4).

A file the watcher ingested sits in ``Processed/`` whatever its validator says. When the
upload is rejected (a validator's ``failure``, a callback, or ``VALIDATION_TIMEOUT``), the
watcher reads it on ``platform.payload-status`` (consumer group ``watcher-rejections``) and
moves the file from ``Processed/`` to ``Rejected/`` (same relative path, ``-2``... when the
name is taken) beside ``<name>.rejected.json``: ``file``, ``name`` (the payload: an archive
member has its own), ``request_id``, ``reason``, ``rejected_at``. The file is moved only
when it is certainly that payload: its bytes (gunzipped, for a ``gunzip`` rule) have the
upload's sha256. Otherwise (an archive with one member rejected, a decrypted file, a file
staff already moved) only the report is written in ``Rejected/``, named after the file.
Redelivered statuses change nothing: a report naming the request id is there already.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from typing import Any

from bus import Message
from bus.topics import PAYLOAD_STATUS
from core.consumer import ConsumerLoop
from core.services import Services
from db import as_utc
from watcher import files
from watcher.pipeline import PROCESSED

logger = logging.getLogger(__name__)

GROUP = "watcher-rejections"
REJECTED = "Rejected"
SUFFIX = ".rejected.json"
MAX_CANDIDATES = 100


class Rejections:
    """The handler of ``platform.payload-status`` messages (every other status is passed
    over at once)."""

    def __init__(self, services: Services) -> None:
        assert services.settings.watch_dir is not None
        self.services = services
        self.root = services.settings.watch_dir

    def loop(self) -> ConsumerLoop:
        return ConsumerLoop(self.services.bus, GROUP, [PAYLOAD_STATUS], self,
                            name="watcher-rejections")

    def __call__(self, data: dict[str, Any], message: Message | None = None) -> None:
        request_id = data.get("request_id")
        if data.get("status") != "rejected" or not isinstance(request_id, str):
            return
        upload = self.services.database.get_upload(request_id)
        if upload is None or upload["source"] != "watcher":
            return
        metadata = json.loads(upload["metadata"] or "{}")
        relative = metadata.get("watch_path")
        if not isinstance(relative, str) or not relative:
            return
        self.mark(relative, upload, metadata.get("steps") or [])

    def mark(self, relative: str, upload: dict[str, Any], steps: list[str]) -> str:
        """Move the file (or write the report) for a rejected ``upload``; returns where."""
        request_id = upload["request_id"]
        if self._reported(relative, request_id):
            return "already"
        report = {"file": files.display(relative), "name": upload["filename"],
                  "request_id": request_id, "reason": upload["reason"],
                  "rejected_at": as_utc(upload["updated_at"]).isoformat()}
        data = (json.dumps(report, indent=2) + "\n").encode()
        found = self._find(relative, upload["sha256"], steps)
        where = None
        if found is not None:
            try:
                where = files.move(self.root, found, REJECTED, relative, None, data, SUFFIX)
            except FileNotFoundError:
                where = None
        if where is None:
            where = files.write_report(self.root, REJECTED, relative, SUFFIX, data)
        logger.warning("request_id=%s path=%s rejected (%s): %s", request_id, relative,
                       upload["reason"], where)
        return where

    def _reported(self, relative: str, request_id: str) -> bool:
        for raw in files.reports(self.root, REJECTED, relative, SUFFIX):
            try:
                if json.loads(raw).get("request_id") == request_id:
                    return True
            except (ValueError, AttributeError):
                continue
        return False

    def _find(self, relative: str, sha256: str, steps: list[str]) -> str | None:
        """The file in ``Processed/`` that holds this payload, if it can be told."""
        if steps not in ([], ["gunzip"]):
            return None
        *dirs, name = relative.split("/")
        for count, candidate in enumerate(files.candidates(name)):
            path = "/".join((PROCESSED, *dirs, candidate))
            try:
                source = files.open_source(self.root, path)
            except (OSError, ValueError, files.NotRegular):
                return None
            if source is None or count >= MAX_CANDIDATES:
                return None
            with source.handle:
                if _sha256(source.handle, gunzip=bool(steps)) == sha256:
                    return path
        return None


def _sha256(handle: Any, gunzip: bool) -> str | None:
    digest = hashlib.sha256()
    reader = gzip.GzipFile(fileobj=handle) if gunzip else handle
    try:
        while block := reader.read(1024 * 1024):
            digest.update(block)
    except (OSError, EOFError, zlib.error):  # not gzip, or cut short: not this payload
        return None
    return digest.hexdigest()
