"""Topic provisioning on Kafka: create the topics a deployment uses with a partition count
and replication factor, and verify them in the cluster's metadata (create_topics.py).

Idempotent: a topic that exists is left as it is (its partitions are never changed here:
adding partitions moves keys between them), and is verified like a new one. A topic is
ready when the metadata lists it with at least the partitions asked for and, when a
replication factor is asked for, at least that many replicas per partition. Anything else
is reported with the reason: the broker refused CreateTopics (librdkafka's mock cluster
does not implement it: there, topics must be made with its own API or by auto-creation),
a topic has fewer partitions or replicas than asked, the brokers cannot be reached.

The metadata is read for all topics at once, which never auto-creates one (naming a topic
in a metadata request may, with ``auto.create.topics.enable``).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bus import BusUnavailable
from bus.kafka import COMMON_CONFIG, librdkafka_logger

BROKER_DEFAULT = -1  # replication factor: the brokers' default.replication.factor


@dataclass(frozen=True)
class TopicState:
    topic: str
    ready: bool
    detail: str  # "created (4 partitions, 1 replica)", or why it is not ready


@dataclass(frozen=True)
class _Found:
    partitions: int
    replicas: int  # the fewest replicas of any partition


def ensure_topics(servers: str, topics: Sequence[str], partitions: int,
                  replication: int = BROKER_DEFAULT, timeout: float = 15.0) -> list[TopicState]:
    """Create the missing ``topics`` and verify every one; ``BusUnavailable`` when the
    cluster's metadata cannot be read within ``timeout`` seconds."""
    config: dict[str, Any] = {"bootstrap.servers": servers, "logger": librdkafka_logger,
                              **COMMON_CONFIG}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    found = _metadata(admin, deadline)
    missing = [topic for topic in dict.fromkeys(topics) if topic not in found]
    refused = _create(admin, missing, partitions, replication, deadline) if missing else {}
    waiting = [topic for topic in missing if topic not in refused]
    while waiting and time.monotonic() < deadline:  # metadata may trail the creation
        found = _metadata(admin, deadline)
        waiting = [topic for topic in waiting if topic not in found]
        if waiting:
            time.sleep(0.2)
    return [_state(topic, found.get(topic), topic in missing, refused.get(topic), partitions,
                   replication) for topic in topics]


def _state(topic: str, found: _Found | None, new: bool, refused: str | None, partitions: int,
           replication: int) -> TopicState:
    if found is None:
        why = f"could not be created: {refused}" if refused else \
            "was created but does not appear in the cluster's metadata"
        return TopicState(topic, False, why)
    shape = f"{found.partitions} partition(s), {found.replicas} replica(s)"
    if found.partitions < partitions:
        return TopicState(topic, False, f"has {shape}, {partitions} partitions asked for "
                          "(add partitions with kafka-topics.sh --alter: keys then move)")
    if replication > 0 and found.replicas < replication:
        return TopicState(topic, False, f"has {shape}, replication factor {replication} "
                          "asked for")
    return TopicState(topic, True, f"{'created' if new else 'exists'} ({shape})")


def _metadata(admin: AdminClient, deadline: float) -> dict[str, _Found]:
    try:
        metadata = admin.list_topics(timeout=max(0.5, deadline - time.monotonic()))
    except KafkaException as exc:
        raise BusUnavailable(f"Kafka metadata: {exc.args[0]}") from exc
    out = {}
    for name, topic in metadata.topics.items():
        if topic.error is None and topic.partitions:
            replicas = min(len(p.replicas) for p in topic.partitions.values())
            out[name] = _Found(len(topic.partitions), replicas)
    return out


def _create(admin: AdminClient, topics: list[str], partitions: int, replication: int,
            deadline: float) -> dict[str, str]:
    """Ask for the topics; returns the reasons of those refused."""
    wait = max(1.0, deadline - time.monotonic())
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in topics],
                                  request_timeout=wait)
    refused: dict[str, str] = {}
    for topic, future in futures.items():
        try:
            future.result(wait + 1)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # made meanwhile: verified
                refused[topic] = error.str()
        except Exception as exc:  # noqa: BLE001 - the future's own timeout
            refused[topic] = str(exc) or type(exc).__name__
    return refused
