"""Issue 10 item 2: one message over the broker's size limit (the mock cluster's producer
refuses anything over message.max.bytes, 1,000,000 bytes) used to fail its whole batch of
200 every 30 s, forever. It is parked on its own, with its reason, counted; the others are
delivered at once, before and after it."""
from __future__ import annotations

import json
import uuid

import pytest
from prometheus_client import REGISTRY

from bus.kafka import KafkaBus
from core.relay import OutboxRelay
from core.settings import Settings
from db import Database, OutboxItem
from tests.contracts.bus_contract import consume
from tests.fixtures.kafka import CreateTopics

pytestmark = [pytest.mark.kafka]


def parked_count(topic: str) -> float:
    return REGISTRY.get_sample_value("gateway_outbox_parked_total", {"topic": topic}) or 0.0


def test_an_oversized_message_is_parked_and_the_rest_delivered(
        database: Database, kafka_bootstrap: str, kafka_topics: CreateTopics) -> None:
    topic = f"park-{uuid.uuid4().hex[:10]}"
    kafka_topics([topic])
    keys = [f"small-{n}" for n in range(3)] + ["huge"] + [f"small-{n}" for n in range(3, 6)]
    for key in keys:
        value = {"key": key, "pad": "x" * (1_500_000 if key == "huge" else 100)}
        database.record_messages([OutboxItem(topic, key, value, request_id=key)])
    bus = KafkaBus(Settings.from_env({"KAFKAMQ": kafka_bootstrap, "URL_SIGNING_KEY": "k"}))
    relay = OutboxRelay(database, bus)
    producer = bus.producer()
    before = parked_count(topic)
    try:
        assert relay.deliver_once(producer) == 6
        assert relay.deliver_once(producer) == 0  # records the 6; nothing left to claim
        assert database.outbox_depth() == 0
        [parked] = database.outbox_parked()
        assert (parked["topic"], parked["key"], parked["request_id"]) == (topic, "huge", "huge")
        assert parked["size"] > 1_500_000
        assert "too large" in parked["reason"].lower(), parked["reason"]
        assert parked_count(topic) == before + 1
        received = consume(bus, f"g-{uuid.uuid4().hex}", [topic], 6)
        assert sorted(json.loads(m.value)["key"] for m in received) == sorted(
            k for k in keys if k != "huge")
        # parked for good: later passes do not claim it again
        assert database.claim_outbox(10, lease_seconds=0.0) == []
    finally:
        producer.close()
        bus.close()
