"""Re-drive a service's dead letters: ``python app.py redrive SERVICE [--idle SECONDS]``.

Moves what ``platform.upload.<service>.dlq`` holds back onto ``platform.upload.<service>``,
so that the service's validators try those payloads again (after the poison was fixed: a
check repaired, a command installed). Each dead letter becomes its announcement again
(the fields the loop added, ``error``, ``attempts``, ``failed_at``, are removed) and keeps
its key (the request id).

Consumer group ``redrive-<service>`` on the dead-letter topic: a letter's offset is
committed after the broker acknowledged its announcement, so a second run moves only
what was dead-lettered since (idempotent), and a crash in between moves a letter twice
(at least once: the validator repeats its verdict, the gateway keeps the first). A letter
that is not an announcement (not JSON, or without ``request_id`` and ``url``) could never
be validated: it is logged and passed over, not moved. The command stops when no letter
arrived for ``--idle`` seconds (10), logs each letter it moved or passed over
(``request_id=…``) and a summary, and exits 0; 1 when the bus failed on the way (what was
moved stays moved, the rest is moved by the next run).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from bus import Bus, BusUnavailable, Message, OutMessage
from bus.topics import dead_letter_topic, service_topic
from core import metrics

logger = logging.getLogger(__name__)

ADDED_FIELDS = ("error", "attempts", "failed_at")
SEND_TIMEOUT = 10.0


@dataclass
class Redrive:
    moved: int = 0
    passed_over: int = 0
    failed: str | None = None


def announcement_of(letter: Message) -> tuple[dict[str, Any] | None, Any]:
    """The announcement a dead letter stands for (None when it is not one), and the
    error it was dead-lettered for."""
    try:
        record = json.loads(letter.value)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(record, dict):
        return None, None
    if not isinstance(record.get("request_id"), str) or not isinstance(record.get("url"), str):
        return None, record.get("error")
    return {k: v for k, v in record.items() if k not in ADDED_FIELDS}, record.get("error")


def redrive(bus: Bus, service: str, idle: float = 10.0) -> Redrive:
    source, target = dead_letter_topic(service), service_topic(service)
    result = Redrive()
    consumer = bus.consumer(f"redrive-{service}", [source])
    producer = bus.producer()
    try:
        last = time.monotonic()
        while time.monotonic() - last < idle:
            letter = consumer.poll(0.2)
            if letter is None:
                continue
            last = time.monotonic()
            _move(letter, producer, service, result)
            consumer.commit(letter)
    except BusUnavailable as exc:
        result.failed = str(exc)
        logger.error("redrive %s stopped: bus unavailable (%s); run it again", service, exc)
    finally:
        producer.close()
        consumer.close()
    logger.info("redrive %s: %d dead letter(s) moved from %s to %s, %d passed over", service,
                result.moved, source, target, result.passed_over)
    return result


def _move(letter: Message, producer: Any, service: str, result: Redrive) -> None:
    target = service_topic(service)
    announcement, why = announcement_of(letter)
    if announcement is None:
        result.passed_over += 1
        logger.warning("request_id=%s dead letter at %s[%d]@%d is not an announcement; "
                       "passed over", letter.key, letter.topic, letter.partition,
                       letter.offset)
        return
    out = OutMessage(target, letter.key or announcement["request_id"],
                     json.dumps(announcement).encode())
    if not producer.send([out], SEND_TIMEOUT)[0]:
        raise BusUnavailable(f"announcement to {target} not acknowledged")
    result.moved += 1
    metrics.VALIDATOR_REDRIVEN.labels(service).inc()
    logger.info("request_id=%s re-driven from %s to %s (dead-lettered for: %s)",
                announcement["request_id"], letter.topic, target, why)
