"""The Kafka bus (confluent-kafka / librdkafka). Selected by ``KAFKAMQ``, the bootstrap
servers (``host:port[,host:port...]``).

Producer: ``enable.idempotence=true``, ``acks=all``, ``linger.ms=1``; the message key is
the partitioning key, so messages with one key keep their order. ``send`` produces every
message with its own delivery callback and waits up to ``timeout`` for the
acknowledgements; a message the client or the broker refuses for good (larger than
``message.max.bytes``, 1,000,000 bytes by default; invalid) is reported ``Refused`` on its
own while the others go on; a background thread serves the callbacks, so several threads may share
one producer. What is not acknowledged in time is reported False, but librdkafka keeps
retrying it until ``message.timeout.ms`` (``message_timeout``, 10 s, the outbox relay's
send timeout), so a message reported False may still be delivered later, and a resend can
duplicate it: delivery is at least once and consumers dedupe. Keeping
``message.timeout.ms`` no longer than the send timeout bounds that to about one stale
copy per resend. A fatal producer error (idempotence state lost) recreates the producer.

Consumer: ``group.id`` = group, ``enable.auto.commit=false``,
``enable.auto.offset.store=false``, ``auto.offset.reset=earliest``,
``allow.auto.create.topics=true``, ``partition.assignment.strategy=cooperative-sticky``
(a member joining or leaving moves only the partitions that change hands; every member of
a group must use it). ``commit`` commits offset+1 synchronously, with whatever ``store``
noted. Rebalances (issue 12 item 4):

- each assignment of a partition is numbered and every message carries the number it was
  polled under (``Message.generation``); a message of a partition that was revoked, lost
  or assigned again since it was polled is never committed (its new owner, maybe this
  member again, has it again from the committed offset), so a late commit cannot move
  an offset backwards over a newer owner's;
- on revoke (an orderly rebalance, ``close``) the offsets stored for the revoked
  partitions are committed before they go, so their next owner starts after them; on
  lost (this member was dropped) nothing is committed;
- a commit refused because a rebalance is in progress, the generation changed or the
  member is unknown is given up at once (logged): retrying it cannot succeed, and a
  member that waits instead of polling is dropped from the group. What it carried stays
  stored for the revoke, or is redelivered. Other commit failures raise
  ``BusUnavailable``: the caller retries later while it keeps polling.

``poll`` skips error events (logged); a fatal one raises ``BusUnavailable``. A member
that does not poll for ``max.poll.interval.ms`` (5 min, librdkafka's default) is removed
from the group.

Timeouts and backoffs are short enough for loopback tests and sane in production:
reconnect backoff 100 ms to 2 s, connection setup timeout 10 s, fetch wait 10 ms (a
broker answers a fetch as soon as data arrives, so this only sets how often an idle
consumer asks; librdkafka's mock cluster holds every fetch for the whole wait, which made
its bus hop 60 ms p50 with a 100 ms wait), session timeout 10 s (``KAFKA_SESSION_TIMEOUT``
in seconds, or ``session_timeout``; brokers accept 6 s to 30 min by default,
``group.min.session.timeout.ms`` / ``group.max.session.timeout.ms``, and refuse a member
outside them). A group member that closes leaves the group at once; one that dies (SIGKILL,
a lost host) holds its partitions until its session times out, so the session timeout is
how long a crashed gateway's verdicts or a crashed validator's announcements wait for
another member (bench/scaleout.py). The default stays 10 s: heartbeats come from
librdkafka's own thread, so a busy interpreter does not miss them, but a shorter session
turns every network pause or stalled host longer than it into a rebalance (Kafka raised its
own default from 10 to 45 s for that, KIP-735), and 6 s is the brokers' floor: a broker
whose floor was raised would refuse every member. Lower it towards 6 s where failover
time matters more than that. The librdkafka mock
cluster makes a member joining after a LeaveGroup wait for a session timeout too, so tests
on the mock use a 1 s session.

``create_topics`` uses the admin API with the brokers' default partition count and
replication factor; an existing topic is success; any other failure (the librdkafka mock
cluster has no CreateTopics) is logged and left to the brokers' auto-creation.
create_topics.py provisions a deployment's topics with a partition count and replication
factor and verifies them (bus/kafka_admin.py).
``check`` lists topics within 3 s or raises ``BusUnavailable``.

librdkafka's log lines go to the ``bus.kafka.librdkafka`` logger, the clients' error
events to ``bus.kafka.errors``; while the brokers are down both repeat many times a
second, so each kind of line is logged at most once a minute (bus/quiet.py).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from confluent_kafka import Consumer as KConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as KProducer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # not in its __all__

from bus import Bus, BusUnavailable, Consumer, Message, OutMessage, Producer, Refused
from bus.quiet import quiet
from core.settings import Settings, SettingsError, env_float

logger = logging.getLogger(__name__)
# librdkafka's own log lines (connection failures repeat many times a second while the
# brokers are down): a separate logger so that its level can be set on its own.
librdkafka_logger = logging.getLogger(__name__ + ".librdkafka")
# the clients' error events (broker connections failing): as repetitive
errors_logger = logging.getLogger(__name__ + ".errors")
quiet(librdkafka_logger, errors_logger)

MESSAGE_TIMEOUT = 10.0
SESSION_TIMEOUT = 10.0
MAX_SESSION_TIMEOUT = 1800.0  # group.max.session.timeout.ms, the brokers' default
CHECK_TIMEOUT = 3.0
CREATE_TIMEOUT = 5.0
CLOSE_FLUSH_TIMEOUT = 5.0
# Incremental rebalancing (KIP-429): a member joining or leaving moves only the partitions
# that change hands; the others keep being consumed through the rebalance. Every member
# of a group must use the same strategy.
ASSIGNMENT_STRATEGY = "cooperative-sticky"

COMMON_CONFIG: dict[str, Any] = {
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 2000,
    "socket.connection.setup.timeout.ms": 10000,
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 1000,
    "log.connection.close": False,  # brokers close idle connections: not news
}
# A rebalance is taking (or took) the partition or the member away: a commit now cannot
# succeed in this generation; stored offsets are committed on revoke, or redelivered.
LOST_OWNERSHIP = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError.FENCED_INSTANCE_ID,
}


# What a broker (or the client, before sending) refuses for one message for good: too
# large for message.max.bytes, invalid. Other errors are retried.
REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
}


class _Refused(Exception):
    """``produce`` refused one message for good."""


def session_timeout_from(env: Mapping[str, str]) -> float:
    """``KAFKA_SESSION_TIMEOUT`` (seconds, at most 1800: the brokers' default ceiling),
    10 s when unset."""
    timeout = env_float(env, "KAFKA_SESSION_TIMEOUT", SESSION_TIMEOUT)
    if timeout > MAX_SESSION_TIMEOUT:
        raise SettingsError(f"KAFKA_SESSION_TIMEOUT must be at most {MAX_SESSION_TIMEOUT:g} "
                            f"seconds, got {timeout:g}")
    return timeout


def _config(servers: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": servers, "logger": librdkafka_logger, **COMMON_CONFIG, **extra}


class KafkaBus(Bus):
    def __init__(self, settings: Settings, message_timeout: float = MESSAGE_TIMEOUT,
                 session_timeout: float | None = None) -> None:
        if not settings.kafka_servers:
            raise ValueError("KafkaBus needs KAFKAMQ (settings.kafka_servers)")
        self.servers = settings.kafka_servers
        self.message_timeout = message_timeout
        self.session_timeout = (session_timeout if session_timeout is not None
                                else session_timeout_from(settings.env))
        self.check_timeout = CHECK_TIMEOUT
        self._admin: AdminClient | None = None
        self._admin_lock = threading.Lock()

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self.servers, self.message_timeout)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.servers, group, topics, self.session_timeout)

    def create_topics(self, topics: Sequence[str]) -> None:
        if not topics:
            return
        admin = self._admin_client()
        futures = admin.create_topics([NewTopic(t) for t in topics], request_timeout=CREATE_TIMEOUT)
        for topic, future in futures.items():
            try:
                future.result(CREATE_TIMEOUT + 1)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                logger.warning("could not create topic %s (%s); relying on auto-creation",
                               topic, error.str())
            except Exception as exc:  # noqa: BLE001 - e.g. the future's own timeout
                logger.warning("could not create topic %s (%s); relying on auto-creation",
                               topic, exc)
        admin.poll(0)

    def check(self) -> None:
        admin = self._admin_client()
        try:
            admin.list_topics(timeout=self.check_timeout)
        except KafkaException as exc:
            raise BusUnavailable(f"Kafka at {self.servers}: {exc.args[0]}") from exc
        finally:
            admin.poll(0)  # forward librdkafka's queued log lines

    def delivered(self, topic: str, messages: Sequence[tuple[str | None, bytes]],
                  since: float, timeout: float) -> set[int]:
        """See ``Bus.delivered`` and bus/kafka_lookup.py."""
        from bus import kafka_lookup

        return kafka_lookup.delivered(_config(self.servers), topic, messages, since, timeout)

    def close(self) -> None:
        with self._admin_lock:
            self._admin = None

    def _admin_client(self) -> AdminClient:
        with self._admin_lock:
            if self._admin is None:
                self._admin = AdminClient(_config(self.servers))
            return self._admin


class _Batch:
    """The delivery state of one ``send``: a result per message, set by callbacks."""

    def __init__(self, size: int) -> None:
        self.results: list[bool | Refused] = [False] * size
        self._pending = size
        self._lock = threading.Lock()
        self.done = threading.Event()
        if size == 0:
            self.done.set()

    def callback(self, index: int) -> Callable[[KafkaError | None, Any], None]:
        def on_delivery(error: KafkaError | None, _message: Any) -> None:
            if error is not None:  # the caller reports the batch; one line per message is noise
                logger.debug("delivery failed: %s", error.str())
            with self._lock:
                if error is None:
                    self.results[index] = True
                elif error.code() in REFUSED:
                    self.results[index] = Refused(f"Kafka: {error.str()}")
                self._pending -= 1
                if self._pending == 0:
                    self.done.set()
        return on_delivery

    def refuse(self, index: int, reason: str) -> None:
        """Message ``index`` was refused before it was produced (no callback comes)."""
        with self._lock:
            self.results[index] = Refused(reason)
        self.abandon(1)

    def abandon(self, count: int) -> None:
        """``count`` messages were never produced: they will get no callback."""
        with self._lock:
            self._pending -= count
            if self._pending <= 0:
                self.done.set()


class KafkaProducer(Producer):
    def __init__(self, servers: str, message_timeout: float) -> None:
        self._config = _config(
            servers, **{
                "enable.idempotence": True,
                "acks": "all",
                # the relay hands over whole batches at once, so a longer linger batches
                # little more and adds its length to every hop (bench/latency.py on the
                # mock cluster: upload -> available p50 61 ms with 5, 34-38 ms with 1)
                "linger.ms": 1,
                "message.timeout.ms": int(message_timeout * 1000),
                "error_cb": self._on_error,
            })
        self._fatal = False
        self._lock = threading.Lock()
        self._producer = KProducer(self._config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve_callbacks, name="kafka-producer-poll",
                                        daemon=True)
        self._poller.start()

    def send(self, messages: Sequence[OutMessage], timeout: float) -> list[bool | Refused]:
        deadline = time.monotonic() + timeout
        producer = self._current()
        batch = _Batch(len(messages))
        for index, message in enumerate(messages):
            try:
                queued = self._produce(producer, message, batch.callback(index), deadline)
            except _Refused as exc:
                batch.refuse(index, str(exc))
                continue
            if not queued:
                batch.abandon(len(messages) - index)
                break
        batch.done.wait(max(0.0, deadline - time.monotonic()))
        return list(batch.results)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._poller.join()
        left = self._producer.flush(CLOSE_FLUSH_TIMEOUT)
        if left:
            logger.warning("producer closed with %d messages not acknowledged", left)

    def _produce(self, producer: KProducer, message: OutMessage,
                 on_delivery: Callable[[KafkaError | None, Any], None], deadline: float) -> bool:
        """Queue one message, waiting for room until ``deadline``; False if it was not."""
        while True:
            try:
                producer.produce(message.topic, message.value, message.key, on_delivery=on_delivery,
                                 headers=list(message.headers) or None)
                return True
            except BufferError:
                if time.monotonic() >= deadline:
                    logger.warning("producer queue full; message to %s not sent", message.topic)
                    return False
                time.sleep(0.01)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in REFUSED:  # this message only (e.g. over message.max.bytes)
                    raise _Refused(f"Kafka: {error.str()}") from exc
                raise BusUnavailable(f"Kafka: {error}") from exc

    def _current(self) -> KProducer:
        """The producer, recreated after a fatal error (its messages were failed already)."""
        with self._lock:
            if self._fatal:
                old, self._producer = self._producer, KProducer(self._config)
                self._fatal = False
                old.flush(0)
            return self._producer

    def _serve_callbacks(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            logger.error("fatal producer error, the producer will be recreated: %s", error.str())
            self._fatal = True
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            errors_logger.warning("Kafka producer: %s", error.str())
        else:
            errors_logger.info("Kafka producer: %s", error.str())


class KafkaConsumer(Consumer):
    """One member of a consumer group; see the module docstring for its rebalance rules.
    Used by one thread (``poll``, ``store``, ``commit`` and the rebalance callbacks, which
    librdkafka runs inside ``poll`` and ``close``)."""

    def __init__(self, servers: str, group: str, topics: Sequence[str],
                 session_timeout: float) -> None:
        self.group = group
        session_ms = int(session_timeout * 1000)
        self._consumer = KConsumer(_config(
            servers, **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "allow.auto.create.topics": True,
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, session_ms // 5),
                "fetch.wait.max.ms": 10,
                "partition.assignment.strategy": ASSIGNMENT_STRATEGY,
            }))
        self._lock = threading.Lock()
        self._assignments = 0
        # partition -> the assignment it belongs to (Message.generation)
        self._owned: dict[tuple[str, int], int] = {}
        # partition -> (assignment, next offset) handled but not yet committed
        self._stored: dict[tuple[str, int], tuple[int, int]] = {}
        self._committed: dict[tuple[str, int], int] = {}  # next offsets committed
        self._consumer.subscribe(list(topics), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._closed = False

    def poll(self, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                event = self._consumer.poll(remaining)
            except KafkaException as exc:
                raise BusUnavailable(f"Kafka: {exc.args[0]}") from exc
            if event is None:
                return None
            error = event.error()
            if error is None:
                message = _message(event, 0)
                with self._lock:
                    generation = self._owned.get((message.topic, message.partition), 0)
                return dataclasses.replace(message, generation=generation)
            if error.fatal():
                raise BusUnavailable(f"Kafka consumer: {error.str()}")
            eof = error.code() == KafkaError._PARTITION_EOF
            errors_logger.log(logging.DEBUG if eof else logging.WARNING, "group %s: %s",
                              self.group, error.str())
            if remaining <= 0:
                return None

    def store(self, message: Message) -> None:
        key = (message.topic, message.partition)
        with self._lock:
            if (self._owned.get(key) == message.generation
                    and message.offset + 1 > self._committed.get(key, -1)):
                self._stored[key] = (message.generation, message.offset + 1)

    def commit(self, message: Message) -> None:
        """Commit ``message`` and whatever else is stored, of partitions this member
        still holds in the assignment they were polled in; the rest is not committed
        (its new owner has it again)."""
        self.store(message)
        key = (message.topic, message.partition)
        with self._lock:
            stale = self._owned.get(key) != message.generation
            offsets = self._current_offsets(self._stored)
        if stale:
            logger.info("group %s: %s[%d]@%d not committed: the partition was reassigned "
                        "since it was polled", self.group, message.topic, message.partition,
                        message.offset)
        if offsets:
            self._commit(offsets, raise_errors=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()  # revokes the assignment: stored offsets are committed

    # rebalances ---------------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assignments += 1
            for tp in partitions:
                self._owned[(tp.topic, tp.partition)] = self._assignments
        logger.info("group %s: assigned %s", self.group, _names(partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions taken away in an orderly rebalance: commit what was handled of
        them first, so that their next owner starts after it."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        with self._lock:
            stored = {key: value for key, value in self._stored.items() if key in keys}
            offsets = self._current_offsets(stored)
        if offsets:
            self._commit(offsets, raise_errors=False)
        self._forget(keys)
        logger.info("group %s: revoked %s", self.group, _names(partitions))

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions lost without a revoke (this member was dropped from the group):
        they may have a new owner already, so nothing of them is committed."""
        self._forget({(tp.topic, tp.partition) for tp in partitions})
        logger.warning("group %s: assignment lost %s; their messages are redelivered",
                       self.group, _names(partitions))

    def _forget(self, keys: set[tuple[str, int]]) -> None:
        with self._lock:
            for key in keys:
                self._owned.pop(key, None)
                self._stored.pop(key, None)
                self._committed.pop(key, None)

    def _current_offsets(self, stored: dict[tuple[str, int], tuple[int, int]]
                         ) -> list[TopicPartition]:
        """The stored offsets of partitions still held in their assignment (lock held)."""
        return [TopicPartition(topic, partition, offset)
                for (topic, partition), (generation, offset) in stored.items()
                if self._owned.get((topic, partition)) == generation]

    def _commit(self, offsets: list[TopicPartition], raise_errors: bool) -> None:
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False) or []
            errors = [result.error for result in results if result.error is not None]
        except KafkaException as exc:
            errors = [exc.args[0]]
        with self._lock:
            for tp in offsets:
                key = (tp.topic, tp.partition)
                if not errors and key in self._owned:
                    self._committed[key] = max(self._committed.get(key, -1), tp.offset)
                    if self._stored.get(key, (0, -1))[1] <= tp.offset:
                        self._stored.pop(key, None)
        for error in errors[:1]:
            self._commit_failed(offsets, error, raise_errors)

    def _commit_failed(self, offsets: list[TopicPartition], error: KafkaError,
                       raise_errors: bool) -> None:
        what = ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)
        if error.code() in LOST_OWNERSHIP:
            # at once: retrying cannot succeed in this generation, and a member that
            # retries instead of polling is dropped from the group
            logger.info("group %s: commit of %s not made, the assignment is changing or "
                        "gone (%s); committed on revoke, or redelivered to the new owner",
                        self.group, what, error.str())
            return
        if not raise_errors:
            logger.warning("group %s: commit of %s on revoke failed (%s); the new owner "
                           "gets those messages again", self.group, what, error.str())
            return
        raise BusUnavailable(f"Kafka commit: {error.str()}")


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _message(event: Any, generation: int) -> Message:
    key = event.key()
    return Message(
        topic=event.topic(),
        key=key.decode("utf-8", "replace") if key is not None else None,
        value=event.value() or b"",
        partition=event.partition(),
        offset=event.offset(),
        generation=generation,
        headers=tuple((name, value or b"") for name, value in event.headers() or ()),
    )
