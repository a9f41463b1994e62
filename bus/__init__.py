"""Message bus: one small interface, one module per backend.

``KAFKAMQ`` set selects Kafka (confluent-kafka); unset, the embedded bus, an append-only
log in SQLite under ``WORKDIR`` that several processes of one machine can share.

Every method blocks: callers on an event loop run them in an executor or a thread.
Delivery is at least once: a consumer commits a message only after its side effects are
durable, and a message it has not committed comes back after a restart.
Drivers raise ``BusUnavailable`` when the broker cannot be reached.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

from core.settings import Settings

DRIVERS = {
    "kafka": "bus.kafka.KafkaBus",
    "local": "bus.local.LocalBus",
}


class BusUnavailable(Exception):
    """The broker cannot be reached or did not acknowledge in time."""


@dataclass(frozen=True)
class OutMessage:
    """A message to send. ``headers`` travel as Kafka record headers (the embedded bus
    does not keep them)."""

    topic: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Message:
    """A consumed message. ``partition`` and ``offset`` identify it for ``commit``;
    ``generation`` is the consumer's assignment of that partition when it was polled (a
    driver whose partitions move between members refuses to commit a message polled under
    an assignment it no longer holds)."""

    topic: str
    key: str | None
    value: bytes
    partition: int
    offset: int
    generation: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Refused:
    """A ``send`` result: the broker will never take this message (larger than its
    message size limit, invalid), so sending it again cannot help. False as a truth
    value, like a message that was not acknowledged."""

    reason: str

    def __bool__(self) -> bool:
        return False


class Producer(ABC):
    @abstractmethod
    def send(self, messages: Sequence[OutMessage], timeout: float) -> list[bool | Refused]:
        """Send ``messages`` and wait up to ``timeout`` seconds for the broker's
        acknowledgement. Returns, per message, True when it was acknowledged (durably
        appended), False when not (yet: retry), or ``Refused`` when it never will be.
        One refused message does not hold up the others. Messages to one topic with one
        key keep their order."""

    @abstractmethod
    def close(self) -> None:
        """Flush what is pending (bounded) and release the connection."""


class Consumer(ABC):
    @abstractmethod
    def poll(self, timeout: float) -> Message | None:
        """The next message of the subscribed topics, or None after ``timeout`` seconds."""

    @abstractmethod
    def commit(self, message: Message) -> None:
        """Record that ``message`` (and every earlier one of its partition) is done.
        ``BusUnavailable`` when it could not be recorded now: the caller retries later
        (while it keeps polling), or a later commit of the partition covers it. A
        commit for a partition this member no longer holds is dropped quietly: its new
        owner gets the messages again (at least once)."""

    def store(self, message: Message) -> None:
        """Note that ``message`` is done, to be committed by the next ``commit`` of its
        partition, or before the partition is taken away in a rebalance. The default
        notes nothing (a driver without rebalances: the caller's ``commit`` follows)."""

    def pause(self) -> None:
        """Take no messages until ``resume``; ``poll`` returns None meanwhile but keeps
        the member in its group (heartbeats, rebalances, poll-interval checks)."""

    def resume(self) -> None:
        """Undo ``pause`` (a no-op when not paused)."""

    @abstractmethod
    def close(self) -> None:
        ...


class Bus(ABC):
    @abstractmethod
    def producer(self) -> Producer:
        ...

    @abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """A consumer in consumer group ``group``; members of one group share the work,
        each group sees every message."""

    @abstractmethod
    def create_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet (idempotent)."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``BusUnavailable`` when the broker cannot be reached (health)."""

    @abstractmethod
    def delivered(self, topic: str, messages: Sequence[tuple[str | None, bytes]],
                  since: float, timeout: float) -> set[int]:
        """Which of ``messages`` (key, value) are on ``topic`` already, among what was
        appended at or after ``since`` (seconds since the epoch, by the sender's clock:
        give slack): the indexes of those found, each copy on the bus matching one
        message. The outbox relay asks before sending a message whose earlier claimer may
        have sent it and died before recording so (core/relay.py). ``BusUnavailable``
        when the bus could not be read within ``timeout`` seconds."""

    def close(self) -> None:
        """Release what the bus holds; the default has nothing to release."""


def get_bus(settings: Settings) -> Bus:
    """Kafka when ``KAFKAMQ`` is set, else the embedded bus (drivers imported lazily)."""
    dotted = DRIVERS["kafka" if settings.kafka_servers else "local"]
    module_name, class_name = dotted.rsplit(".", 1)
    driver: Callable[[Settings], Bus] = getattr(importlib.import_module(module_name), class_name)
    return driver(settings)


def preflight(settings: Settings) -> None:
    """Check the selected driver's own variables at start-up (``SettingsError``): Kafka's
    ``KAFKA_SESSION_TIMEOUT``; the embedded bus has none."""
    if settings.kafka_servers:
        from bus.kafka import session_timeout_from

        session_timeout_from(settings.env)
