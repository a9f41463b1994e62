"""The Kafka bus on a Kafka-protocol cluster (the mock cluster unless KAFKAMQ is set)."""
from __future__ import annotations

import json
import time
from typing import Iterator

import pytest

from bus import BusUnavailable, OutMessage, get_bus
from bus.kafka import KafkaBus
from bus.kafka_mock import MockKafkaCluster
from core.relay import headers
from core.settings import Settings
from tests.contracts.bus_contract import BusContract, consume, group_name, values

pytestmark = pytest.mark.kafka


@pytest.fixture
def bus(kafka_settings: Settings, _kafka_mock: MockKafkaCluster | None) -> Iterator[KafkaBus]:
    # The mock makes a member joining after a LeaveGroup wait one session timeout.
    kafka = KafkaBus(kafka_settings, session_timeout=1.0 if _kafka_mock else 10.0)
    kafka.check_timeout = 1.0
    yield kafka
    kafka.close()


@pytest.fixture
def topic(kafka_topic: str) -> str:
    return kafka_topic


class TestKafkaBusContract(BusContract):
    pass


def test_selected_by_kafkamq(kafka_settings: Settings) -> None:
    assert isinstance(get_bus(kafka_settings), KafkaBus)


def test_unknown_topic_is_created_on_use(bus: KafkaBus) -> None:
    topic = f"auto-{group_name()}"
    bus.create_topics([topic])  # the mock has no CreateTopics: warns, auto-creation follows
    producer = bus.producer()
    assert producer.send([OutMessage(topic, "k", b"v")], 10.0) == [True]
    producer.close()
    assert values(consume(bus, group_name(), [topic], 1)) == [b"v"]


def test_send_while_brokers_down_then_resend(bus: KafkaBus, kafka_cluster: MockKafkaCluster,
                                             topic: str) -> None:
    producer = bus.producer()
    assert producer.send([OutMessage(topic, "k", b"warm")], 10.0) == [True]
    kafka_cluster.set_down()
    message = OutMessage(topic, "k", b"during-outage")
    started = time.monotonic()
    try:
        assert producer.send([message], 1.0) == [False]
    except BusUnavailable:
        pass
    assert time.monotonic() - started < 2.0
    kafka_cluster.set_up()
    assert producer.send([message], 15.0) == [True]
    producer.close()
    received = values(consume(bus, group_name(), [topic], 3, timeout=5))
    assert received[0] == b"warm" and set(received[1:]) == {b"during-outage"}  # maybe twice


def test_check_raises_when_brokers_down(bus: KafkaBus, kafka_cluster: MockKafkaCluster) -> None:
    bus.check()
    kafka_cluster.set_down()
    started = time.monotonic()
    with pytest.raises(BusUnavailable):
        bus.check()
    assert time.monotonic() - started < 5.0
    kafka_cluster.set_up()
    bus.check()


def test_announcements_carry_the_service_header(bus: KafkaBus, topic: str) -> None:
    """Insights drop-in: consumers route on the Kafka header ``service`` without parsing;
    the relay sets it (and traceparent) on every platform.upload.* message."""
    value = json.dumps({"request_id": "r1", "service": "advisor",
                        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    found = headers("platform.upload.advisor", value.encode())
    assert found == (("service", b"advisor"), ("traceparent", b"00-4bf92f3577b34da6a3ce92"
                                                                b"9d0e0e4736-00f067aa0ba902b7-01"))
    assert headers("platform.upload.validation", value.encode()) == ()
    assert headers("platform.asset-transfer", value.encode()) == ()
    producer = bus.producer()
    assert producer.send([OutMessage(topic, "r1", value.encode(), found)], 10.0) == [True]
    producer.close()
    [message] = consume(bus, group_name(), [topic], 1)
    assert message.headers == found


def test_session_timeout_from_the_environment(kafka_settings: Settings) -> None:
    """``KAFKA_SESSION_TIMEOUT`` (seconds) sets how long a dead member holds its partitions;
    10 s when unset; an argument (tests on the mock) wins."""
    env = {**kafka_settings.env, "KAFKAMQ": kafka_settings.kafka_servers or ""}
    assert KafkaBus(Settings.from_env(env)).session_timeout == 10.0
    tuned = Settings.from_env({**env, "KAFKA_SESSION_TIMEOUT": "6.5"})
    assert KafkaBus(tuned).session_timeout == 6.5
    assert KafkaBus(tuned, session_timeout=1.0).session_timeout == 1.0
