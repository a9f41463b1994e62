"""The contract every bus driver passes. A driver's tests subclass ``BusContract`` and
supply two fixtures: ``bus`` (a ready ``Bus``) and ``topic`` (a fresh topic name per test,
with one partition, created as the driver needs)."""
from __future__ import annotations

import time
import uuid
from typing import Sequence

from bus import Bus, Message, OutMessage

ARRIVAL_TIMEOUT = 15.0  # generous: a Kafka consumer first joins its group


def group_name() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


def send_all(bus: Bus, messages: Sequence[OutMessage], timeout: float = 10.0) -> None:
    producer = bus.producer()
    try:
        assert producer.send(messages, timeout) == [True] * len(messages)
    finally:
        producer.close()


def consume(bus: Bus, group: str, topics: Sequence[str], count: int,
            commit_upto: int = 0, timeout: float = ARRIVAL_TIMEOUT) -> list[Message]:
    """Poll ``count`` messages with a new consumer (commit the first ``commit_upto``
    of them), then close it."""
    consumer = bus.consumer(group, topics)
    received: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                received.append(message)
                if len(received) <= commit_upto:
                    consumer.commit(message)
    finally:
        consumer.close()
    return received


def values(messages: Sequence[Message]) -> list[bytes]:
    return [m.value for m in messages]


class BusContract:
    def test_send_then_poll_returns_key_and_value(self, bus: Bus, topic: str) -> None:
        send_all(bus, [OutMessage(topic, "key-1", b'{"a": 1}')])
        [message] = consume(bus, group_name(), [topic], 1)
        assert (message.topic, message.key, message.value) == (topic, "key-1", b'{"a": 1}')
        assert isinstance(message.partition, int) and isinstance(message.offset, int)

    def test_key_may_be_none_and_unicode(self, bus: Bus, topic: str) -> None:
        send_all(bus, [OutMessage(topic, None, b"a"), OutMessage(topic, "clé-ключ", b"b")])
        received = consume(bus, group_name(), [topic], 2)
        assert sorted((m.key or "", m.value) for m in received) == [("", b"a"), ("clé-ключ", b"b")]

    def test_order_kept_per_key(self, bus: Bus, topic: str) -> None:
        batch = [OutMessage(topic, f"k{i % 3}", f"{i % 3}:{i}".encode()) for i in range(60)]
        send_all(bus, batch[:30])
        send_all(bus, batch[30:])
        received = consume(bus, group_name(), [topic], 60)
        for key in ("k0", "k1", "k2"):
            got = [m.value for m in received if m.key == key]
            assert got == [m.value for m in batch if m.key == key]

    def test_committed_messages_are_not_seen_again(self, bus: Bus, topic: str) -> None:
        group = group_name()
        send_all(bus, [OutMessage(topic, "k", b"one"), OutMessage(topic, "k", b"two")])
        assert values(consume(bus, group, [topic], 2, commit_upto=1)) == [b"one", b"two"]
        assert values(consume(bus, group, [topic], 1, commit_upto=1)) == [b"two"]
        send_all(bus, [OutMessage(topic, "k", b"three")])
        assert values(consume(bus, group, [topic], 1)) == [b"three"]

    def test_uncommitted_message_comes_back_after_restart(self, bus: Bus, topic: str) -> None:
        group = group_name()
        send_all(bus, [OutMessage(topic, "k", b"again")])
        assert values(consume(bus, group, [topic], 1)) == [b"again"]
        assert values(consume(bus, group, [topic], 1)) == [b"again"]

    def test_poll_without_commit_advances(self, bus: Bus, topic: str) -> None:
        send_all(bus, [OutMessage(topic, "k", b"%d" % i) for i in range(3)])
        assert values(consume(bus, group_name(), [topic], 3)) == [b"0", b"1", b"2"]

    def test_each_group_sees_every_message(self, bus: Bus, topic: str) -> None:
        sent = [OutMessage(topic, f"k{i}", b"%d" % i) for i in range(5)]
        send_all(bus, sent)
        for group in (group_name(), group_name()):
            received = consume(bus, group, [topic], 5, commit_upto=5)
            assert sorted(values(received)) == sorted(m.value for m in sent)

    def test_poll_on_empty_topic_returns_none_in_time(self, bus: Bus, topic: str) -> None:
        consumer = bus.consumer(group_name(), [topic])
        try:
            consumer.poll(0.2)
            started = time.monotonic()
            assert consumer.poll(0.5) is None
            assert 0.3 <= time.monotonic() - started < 1.5
        finally:
            consumer.close()

    def test_500_messages_round_trip(self, bus: Bus, topic: str) -> None:
        sent = [OutMessage(topic, f"key-{i % 7}", b"payload-%d" % i) for i in range(500)]
        for start in range(0, 500, 100):
            send_all(bus, sent[start:start + 100])
        received = consume(bus, group_name(), [topic], 500, commit_upto=500)
        assert sorted(values(received)) == sorted(m.value for m in sent)
        for key in {m.key for m in sent}:  # order is kept per key (topics have partitions)
            assert [m.value for m in received if m.key == key] == \
                [m.value for m in sent if m.key == key]

    def test_binary_values_pass_through(self, bus: Bus, topic: str) -> None:
        raw = b"\xff\xfe\x00not utf-8\x80"
        send_all(bus, [OutMessage(topic, "k", raw), OutMessage(topic, "k", b"")])
        received = consume(bus, group_name(), [topic], 2)
        assert values(received) == [raw, b""]
        assert all(isinstance(m.value, bytes) for m in received)

    def test_send_nothing(self, bus: Bus, topic: str) -> None:
        producer = bus.producer()
        try:
            assert producer.send([], 1.0) == []
        finally:
            producer.close()

    def test_check_and_create_topics(self, bus: Bus, topic: str) -> None:
        bus.create_topics([topic])
        bus.create_topics([topic])
        bus.check()

    def test_delivered_finds_what_was_sent_since(self, bus: Bus, topic: str) -> None:
        """``delivered`` (the outbox relay's look before sending again a dead relay's
        claim): what was sent since the moment is found, each copy once; what was sent
        before it, or never, is not."""
        send_all(bus, [OutMessage(topic, "old", b"before")])
        time.sleep(0.05)
        since = time.time()
        send_all(bus, [OutMessage(topic, f"k{i}", b"v%d" % i) for i in range(30)]
                 + [OutMessage(topic, None, b"no key"), OutMessage(topic, "twice", b"same")])
        asked = [("k3", b"v3"), ("k3", b"v4"), ("old", b"before"), ("k29", b"v29"),
                 ("never", b"sent"), (None, b"no key"), ("twice", b"same"), ("twice", b"same"),
                 ("k0", b"v0")]
        assert bus.delivered(topic, asked, since, 15.0) == {0, 3, 5, 6, 8}
        assert bus.delivered(topic, [("old", b"before")], since - 30, 15.0) == {0}
        assert bus.delivered(f"{topic}-none", [("k0", b"v0")], since, 15.0) == set()
