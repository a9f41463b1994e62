"""Rebalances during verdict handling, on librdkafka's mock cluster (issue 12 item 4).

A consumer loop handles batches (as the gateway's verdict loop does) on a topic of four
partitions while messages keep coming; a second member joins the group, takes partitions,
and leaves again. Every committed offset is watched from outside the group: none may go
backwards (at least once allows redelivery, never a commit that undoes a newer one), and
once the second member has left, the first one handles and commits everything, promptly.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer as KConsumer
from confluent_kafka import TopicPartition

from bus import OutMessage
from bus.kafka import KafkaBus
from bus.kafka_mock import MockKafkaCluster
from core.consumer import ConsumerLoop
from core.settings import Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 4


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    """A mock cluster of this test's own: a rebalance must not wait behind other tests'
    groups, nor theirs behind this one."""
    with MockKafkaCluster().start(brokers=1) as mock:
        yield mock


class Recorder:
    """A batch handler that takes a little while per batch (storage moves, a
    transaction) and records what it handled."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, data: dict[str, Any], message: Any) -> None:
        self.handle_batch([data])

    def handle_batch(self, batch: Sequence[dict[str, Any]]) -> None:
        time.sleep(0.3)
        with self.lock:
            self.values.extend(str(item["n"]).encode() for item in batch)

    def count(self) -> int:
        with self.lock:
            return len(self.values)


class Committed:
    """Watches the group's committed offsets from outside it (OffsetFetch)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = KConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                                    "enable.auto.commit": False})
        self._partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.backwards: list[tuple[int, int, int]] = []
        self.last = [-1] * PARTITIONS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                found = self._consumer.committed(self._partitions, timeout=5)
            except Exception:  # noqa: BLE001 - the next look
                continue
            for tp in found:
                if tp.error is None and tp.offset >= 0:
                    if tp.offset < self.last[tp.partition]:
                        self.backwards.append((tp.partition, self.last[tp.partition], tp.offset))
                    self.last[tp.partition] = max(self.last[tp.partition], tp.offset)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def _ends(bootstrap: str, topic: str) -> list[int]:
    probe = KConsumer({"bootstrap.servers": bootstrap, "group.id": "probe-" + uuid.uuid4().hex})
    try:
        return [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)]
    finally:
        probe.close()


def test_member_joins_and_leaves_during_verdict_handling(
        tmp_path: Path, cluster: MockKafkaCluster, caplog: pytest.LogCaptureFixture) -> None:
    """Before: a commit refused with "rebalance in progress" was retried once a second
    without polling, so the member missed the rebalance, was dropped from the group
    ("Unknown member", "generation id is not valid") and its partitions stalled until it
    joined again."""
    caplog.set_level(logging.INFO)
    topic, group = f"rebalance-{uuid.uuid4().hex[:8]}", f"gw-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, partitions=PARTITIONS)
    settings = Settings.from_env({"WORKDIR": str(tmp_path), "KAFKAMQ": cluster.bootstrap})
    bus = KafkaBus(settings, session_timeout=1.0)  # the mock: a join after a leave waits one
    producer = bus.producer()
    sent: list[int] = []
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        n = 0
        while producing.is_set():
            batch = [OutMessage(topic, f"k{i % 40}", b'{"n": %d}' % i) for i in range(n, n + 10)]
            assert all(producer.send(batch, 10.0))
            sent.extend(range(n, n + 10))
            n += 10
            time.sleep(0.02)

    first, second = Recorder(), Recorder()
    loop_a = ConsumerLoop(bus, group, [topic], first, name="gateway-a")
    loop_b = ConsumerLoop(bus, group, [topic], second, name="gateway-b")
    committed = Committed(cluster.bootstrap, group, topic)
    feeder = threading.Thread(target=produce, daemon=True)
    try:
        feeder.start()
        loop_a.start()
        assert wait_for(lambda: first.count() >= 100, 30), "the first member handled nothing"
        loop_b.start()
        assert wait_for(lambda: second.count() >= 100, 30), "the second member got no share"
        handled_a = first.count()
        assert wait_for(lambda: first.count() >= handled_a + 50, 30), "the first one stalled"
        loop_b.stop()  # leaves the group: a second rebalance
        resumed = first.count()
        assert wait_for(lambda: first.count() >= resumed + 200, 30), \
            "the first member stalled after the second left"
        producing.clear()
        feeder.join(15)
        ends = _ends(cluster.bootstrap, topic)
        assert wait_for(lambda: committed.last == ends, 20), \
            f"committed {committed.last}, end offsets {ends}"
    finally:
        producing.clear()
        loop_a.stop()
        loop_b.stop()
        committed.close()
        producer.close()
        bus.close()
    assert committed.backwards == [], "committed offsets went backwards"
    trouble = [r.getMessage() for r in caplog.records
               if r.name in ("bus.kafka", "core.consumer") and r.levelno >= logging.WARNING]
    assert trouble == [], "a member retried a commit instead of polling, or lost its assignment"
    handled = {int(v) for v in first.values + second.values}
    assert handled == set(sent)
