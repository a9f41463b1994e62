"""The loop every validator shares: consume announcements of one service, fetch the payload
through its signed URL, run a check, publish the verdict, then commit.

The verdict is published (and acknowledged by the broker) before the offset is committed,
so a crash in between repeats the verdict, which the gateway treats as a duplicate.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from bus import Bus, BusUnavailable, Message, OutMessage
from core.consumer import ConsumerLoop, MalformedMessage

logger = logging.getLogger(__name__)

VALIDATION_TOPIC = "platform.upload.validation"
FETCH_TIMEOUT = 30.0


@dataclass(frozen=True)
class Verdict:
    validation: str
    reason: str | None = None
    extra: dict[str, Any] | None = None


Check = Callable[[dict[str, Any], BinaryIO], Verdict]


class FetchRefused(Exception):
    """The storage answered that this URL will never work (expired, forged, gone)."""


def fetch(url: str, sink: BinaryIO) -> str:
    """Stream ``url`` into ``sink``; returns the sha256 of what was fetched. A refused
    URL (4xx) is ``FetchRefused``; an unreachable or failing server (5xx) is a
    ``ConnectionError``, which the consumer loop retries."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
            while block := response.read(1024 * 1024):
                digest.update(block)
                sink.write(block)
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            raise FetchRefused(f"fetching the payload was refused: HTTP {exc.code}") from None
        raise ConnectionError(f"payload fetch failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"payload fetch failed: {exc}") from None
    sink.seek(0)
    return digest.hexdigest()


class ValidatorLoop:
    """Runs ``check`` on every announcement of ``service``."""

    def __init__(self, bus: Bus, service: str, check: Check, group: str | None = None) -> None:
        self.bus = bus
        self.service = service
        self.check = check
        self.loop = ConsumerLoop(bus, group or f"validator-{service}",
                                 [f"platform.upload.{service}"], self.handle,
                                 name=f"validator-{service}")
        self._producer = bus.producer()

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        self._producer.close()

    def handle(self, announcement: dict[str, Any], message: Message) -> None:
        request_id = announcement.get("request_id")
        url = announcement.get("url")
        if not isinstance(request_id, str) or not isinstance(url, str):
            raise MalformedMessage("announcement without request_id or url")
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as payload:
            try:
                sha256 = fetch(url, payload)
            except FetchRefused as exc:
                self.publish(request_id, Verdict("failure", str(exc)))
                return
            expected = (announcement.get("checksums") or {}).get("stored_sha256") or (
                announcement.get("checksums") or {}).get("sha256")
            if expected and expected != sha256:
                verdict = Verdict("failure", f"checksum mismatch: fetched {sha256}")
            else:
                verdict = self.check(announcement, payload)  # type: ignore[arg-type]
        self.publish(request_id, verdict)

    def publish(self, request_id: str, verdict: Verdict) -> None:
        body = {**(verdict.extra or {}), "request_id": request_id,
                "validation": verdict.validation}
        if verdict.reason:
            body["reason"] = verdict.reason
        message = OutMessage(VALIDATION_TOPIC, request_id, json.dumps(body).encode())
        if not self._producer.send([message], 10.0)[0]:
            raise BusUnavailable("verdict not acknowledged")
        logger.info("request_id=%s %s validator answered %s", request_id, self.service,
                    verdict.validation)
