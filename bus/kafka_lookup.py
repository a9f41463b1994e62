"""Looking on a Kafka topic for messages appended since a moment (``KafkaBus.delivered``).

The outbox relay asks before sending again a message whose earlier claimer may have sent
it and died before recording so (core/relay.py). A consumer of its own, in no group and
committing nothing, reads each partition of the topic from the first message stamped at
or after ``since`` up to the partition's end as it was when the look began, and matches
keys and values.

The first offset at a time is found by bisecting the partition on the messages' own
timestamps (CreateTime, the producer's clock), one message read per step: librdkafka's mock
cluster answers every ``offsets_for_times`` with -1, which on a real broker means "nothing
that late", so the broker's index cannot be told from the mock's gap. Producers' clocks
and the stamps of several producers interleave out of order by a little: the caller gives
``since`` a slack. This runs rarely (a relay died holding a batch), so the reads, a few
seconds of the topic's traffic, are not a cost on the way of any upload.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Sequence

from confluent_kafka import Consumer as KConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from bus import BusUnavailable

READ_BATCH = 500


def delivered(config: dict[str, Any], topic: str, messages: Sequence[tuple[str | None, bytes]],
              since: float, timeout: float) -> set[int]:
    """The indexes of ``messages`` (key, value) found on ``topic`` among what was appended
    at or after ``since`` (seconds since the epoch); each copy found matches one message.
    ``BusUnavailable`` when the brokers did not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    wanted: dict[tuple[bytes | None, bytes], list[int]] = {}
    for index, (key, value) in enumerate(messages):
        encoded = key.encode() if key is not None else None
        wanted.setdefault((encoded, bytes(value)), []).append(index)
    consumer = KConsumer({**config, "group.id": f"outbox-lookup-{uuid.uuid4().hex}",
                          "enable.auto.commit": False, "enable.auto.offset.store": False,
                          "enable.partition.eof": True, "allow.auto.create.topics": False,
                          "fetch.wait.max.ms": 10})
    found: set[int] = set()
    try:
        for partition in _partitions(consumer, topic, deadline):
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=_left(deadline), cached=False)
            except KafkaException as exc:
                raise BusUnavailable(f"Kafka: watermarks of {topic}[{partition}]: {exc}") from exc
            if high <= low:
                continue
            start = _first_since(consumer, topic, partition, low, high, int(since * 1000),
                                 deadline)
            for message in _read(consumer, topic, partition, start, high, deadline):
                indexes = wanted.get((message.key(), message.value()))
                if indexes:
                    found.add(indexes.pop(0))
            if not any(wanted.values()):
                break
    finally:
        consumer.close()
    return found


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BusUnavailable("Kafka: looking on the topic took too long")
    return left


def _partitions(consumer: KConsumer, topic: str, deadline: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=_left(deadline))
    except KafkaException as exc:
        raise BusUnavailable(f"Kafka: metadata of {topic}: {exc}") from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        if found is not None and found.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise BusUnavailable(f"Kafka: metadata of {topic}: {found.error}")
        return []  # no such topic: nothing was appended to it
    return sorted(found.partitions)


def _first_since(consumer: KConsumer, topic: str, partition: int, low: int, high: int,
                 since_ms: int, deadline: float) -> int:
    """The first offset in [low, high) whose message is stamped at or after ``since_ms``
    (``high`` when none is), by bisection."""
    while low < high:
        middle = (low + high) // 2
        stamped = _timestamp_from(consumer, topic, partition, middle, high, deadline)
        if stamped is None or stamped >= since_ms:
            high = middle
        else:
            low = middle + 1
    return low


def _timestamp_from(consumer: KConsumer, topic: str, partition: int, offset: int, end: int,
                    deadline: float) -> int | None:
    """The timestamp of the first message at or after ``offset`` and before ``end``."""
    for message in _read(consumer, topic, partition, offset, end, deadline, batch=1):
        kind, stamp = message.timestamp()
        return int(stamp) if kind else None
    return None


def _read(consumer: KConsumer, topic: str, partition: int, start: int, end: int,
          deadline: float, batch: int = READ_BATCH) -> Any:
    """The messages of the partition from ``start`` up to ``end`` (exclusive)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        while True:
            events = consumer.consume(batch, timeout=min(0.5, _left(deadline)))
            for event in events:
                error = event.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if event.partition() == partition:
                            return
                        continue
                    if error.fatal() or not error.retriable():
                        raise BusUnavailable(f"Kafka: reading {topic}[{partition}]: {error}")
                    continue
                offset = event.offset()
                if event.partition() != partition or offset is None or offset < start:
                    continue  # fetched for an earlier assignment
                if offset >= end:
                    return
                yield event
                if offset >= end - 1:
                    return
    finally:
        consumer.unassign()
