"""Issue 10's "0 duplicates on available" across a SIGKILL: a relay that dies between the
broker's acknowledgement of its batch and recording it leaves the batch claimed; the relay
that claims it next looks on the bus and sends only what is not there (core/relay.py,
``_look_on_bus``). CI's fault run once found one duplicate on ``platform.upload.available``
after the gateway kill: the killed relay's batch was taken 3 s later (db/presence.py) and
sent again."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from bus import Bus, BusUnavailable, OutMessage
from bus.kafka import KafkaBus
from bus.local import LocalBus
from core.relay import MAX_LOOKS, OutboxRelay
from core.settings import Settings
from db import Database, OutboxItem
from tests.contracts.bus_contract import consume, group_name
from tests.fixtures.kafka import CreateTopics
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _record(database: Database, topic: str, n: int) -> None:
    database.record_messages([OutboxItem(topic, f"k{i}", {"i": i}) for i in range(n)])


def _keys_on(bus: Bus, topic: str, expected: int) -> Counter[str]:
    # more than expected are asked for: the copies a relay sent again would show
    received = consume(bus, group_name(), [topic], expected + 10, timeout=4.0)
    return Counter(m.key or "" for m in received)


@pytest.fixture
def local_bus(tmp_path: Path) -> Iterator[LocalBus]:
    bus = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    yield bus
    bus.close()


def test_a_dead_relays_acknowledged_batch_is_not_sent_again(database: Database,
                                                          local_bus: LocalBus) -> None:
    topic = "platform.upload.available"
    _record(database, topic, 6)
    # the relay that dies: claims everything, the bus acknowledges four, nothing recorded
    claimed = database.claim_outbox(100, lease_seconds=0.2)
    producer = local_bus.producer()
    try:
        assert producer.send([OutMessage(r.topic, r.key, r.value) for r in claimed[:4]],
                             5.0) == [True] * 4
        time.sleep(0.3)  # its lease runs out
        relay = OutboxRelay(database, local_bus)
        assert relay.deliver_once(producer) == 6  # four found there, two sent
        relay.deliver_once(producer)  # records them
        assert database.outbox_depth() == 0
    finally:
        producer.close()
    assert _keys_on(local_bus, topic, 6) == Counter({f"k{i}": 1 for i in range(6)})


def test_a_first_claim_is_sent_without_looking(database: Database, local_bus: LocalBus) -> None:
    class NoLooking(LocalBus):
        def delivered(self, topic: str, messages: Sequence[tuple[str | None, bytes]],
                      since: float, timeout: float) -> set[int]:
            raise AssertionError("looked on the bus for messages nobody claimed before")

    _record(database, "t", 3)
    bus = NoLooking(local_bus_settings(local_bus))
    producer = bus.producer()
    try:
        assert OutboxRelay(database, bus).deliver_once(producer) == 3
    finally:
        producer.close()
        bus.close()


def local_bus_settings(bus: LocalBus) -> Settings:
    return Settings.from_env({"WORKDIR": str(bus.path.parent)})


def test_a_look_that_fails_is_left_for_later_then_given_up(database: Database,
                                                          local_bus: LocalBus) -> None:
    """The bus cannot be read: the messages stay marked for the next claimer to look again;
    after ``MAX_LOOKS`` failed looks they are sent (at least once)."""
    looks: list[str] = []

    class Unreadable(LocalBus):
        def delivered(self, topic: str, messages: Sequence[tuple[str | None, bytes]],
                      since: float, timeout: float) -> set[int]:
            looks.append(topic)
            raise BusUnavailable("cannot read")

    _record(database, "t", 2)
    database.claim_outbox(100, lease_seconds=0.0)  # the claimer died at once
    bus = Unreadable(local_bus_settings(local_bus))
    relay = OutboxRelay(database, bus)
    producer = bus.producer()
    try:
        for attempt in range(MAX_LOOKS):
            time.sleep(0.01)
            _expire_retries(database)
            assert relay.deliver_once(producer) == 0
            assert len(looks) == attempt + 1
            assert all(row.sent_since is not None for row in database.claim_outbox(0))
        _expire_retries(database)
        assert relay.deliver_once(producer) == 2  # given up looking: sent
        assert len(looks) == MAX_LOOKS + 1
    finally:
        producer.close()
        bus.close()


def _expire_retries(database: Database) -> None:
    from sqlalchemy import text

    with database.engine.begin() as conn:
        conn.execute(text("UPDATE outbox SET claimed_until = NULL"))


# a relay in a process of its own on PostgreSQL and Kafka: claims everything under its
# presence lock, has the brokers acknowledge all of it, says so, and is killed before its
# next pass records anything
SENDER = """
import sys, time
from bus import OutMessage
from bus.kafka import KafkaBus
from core.settings import Settings
from db import Database
database = Database(sys.argv[1])
presence = database.relay_presence()
presence.start()
rows = database.outbox_sent_and_claim([], 100, 30.0, None, presence)
producer = KafkaBus(Settings.from_env({"WORKDIR": sys.argv[3], "KAFKAMQ": sys.argv[2]})).producer()
acked = producer.send([OutMessage(r.topic, r.key, r.value) for r in rows], 10.0)
print(len(rows), sum(map(bool, acked)), flush=True)
time.sleep(600)
"""


@pytest.mark.postgres
@pytest.mark.kafka
@pytest.mark.timeout(90)
def test_a_killed_gateways_batch_is_on_kafka_once(pg_url: str, kafka_bootstrap: str,
                                                  kafka_topics: CreateTopics,
                                                  tmp_path: Path) -> None:
    database = Database(pg_url)
    database.migrate()
    topic = f"platform.upload.available-{uuid.uuid4().hex[:8]}"
    kafka_topics([topic])
    bus = KafkaBus(Settings.from_env({"WORKDIR": str(tmp_path), "KAFKAMQ": kafka_bootstrap}),
                   session_timeout=1.0)
    from sqlalchemy import text

    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox"))
    _record(database, topic, 8)
    process = subprocess.Popen([sys.executable, "-c", SENDER, pg_url, kafka_bootstrap,
                                str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    relay = OutboxRelay(database, bus)
    producer = bus.producer()
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split() == ["8", "8"]
        process.kill()
        process.wait(10)
        relay.start()  # takes the dead relay's claims once its lock is gone (3 s)
        assert wait_for(lambda: database.outbox_depth() == 0, timeout=30.0)
        relay.stop()
        assert _keys_on(bus, topic, 8) == Counter({f"k{i}": 1 for i in range(8)})
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        relay.stop()
        producer.close()
        bus.close()
        database.close()
