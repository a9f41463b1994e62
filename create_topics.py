"""Create every topic the system uses on the Kafka cluster named by KAFKAMQ, with a
partition count and replication factor, and verify them (bus/kafka_admin.py).
Idempotent: topics that exist are left alone and verified. With KAFKAMQ unset there is
nothing to create: the embedded bus makes topics as they are used.

    KAFKAMQ=localhost:9092 python create_topics.py --partitions 4 --replication-factor 3

``--partitions`` (``TOPIC_PARTITIONS``, default 4: as many validators or gateways per
group as work at once), ``--replication-factor`` (``TOPIC_REPLICATION_FACTOR``, default
-1: the brokers' ``default.replication.factor``), ``--timeout`` seconds (default 15).
Prints one line per topic; exit 0 when every topic is ready, 1 when one could not be
created or verified (the line says why), 2 on a configuration error.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from areas.jobs import TOPICS as AREA_TOPICS
from bus import BusUnavailable
from bus.topics import all_topics
from core.settings import Settings, SettingsError


def topics(settings: Settings) -> list[str]:
    """Every topic: the pipeline's (bus/topics.py) and the upload areas' (areas/jobs.py)."""
    return all_topics(settings) + list(AREA_TOPICS)


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name} {value!r} is not a whole number") from None


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python create_topics.py",
                                     description="Create and verify the Kafka topics.")
    parser.add_argument("--partitions", type=int, default=_int_env("TOPIC_PARTITIONS", 4),
                        help="partitions per topic (TOPIC_PARTITIONS, default 4)")
    parser.add_argument("--replication-factor", type=int,
                        default=_int_env("TOPIC_REPLICATION_FACTOR", -1),
                        help="replicas per partition (TOPIC_REPLICATION_FACTOR, default -1: "
                             "the brokers' default)")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait for the cluster (default 15)")
    args = parser.parse_args(argv)
    if args.partitions < 1:
        raise SettingsError(f"--partitions (TOPIC_PARTITIONS) must be at least 1, "
                            f"got {args.partitions}")
    if args.replication_factor == 0 or args.replication_factor < -1:
        raise SettingsError("--replication-factor (TOPIC_REPLICATION_FACTOR) must be -1 "
                            f"(the brokers' default) or at least 1, got {args.replication_factor}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args = _arguments(argv)
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.kafka_servers:
        print("KAFKAMQ is not set: the embedded bus needs no topics created")
        return 0
    from bus.kafka_admin import ensure_topics  # confluent-kafka only when it is needed

    try:
        states = ensure_topics(settings.kafka_servers, topics(settings), args.partitions,
                               args.replication_factor, args.timeout)
    except BusUnavailable as exc:
        print(f"error: Kafka at {settings.kafka_servers} cannot be reached ({exc}); "
              "no topic created", file=sys.stderr)
        return 1
    for state in states:
        if state.ready:
            print(f"topic ready: {state.topic}: {state.detail}")
        else:
            print(f"topic NOT ready: {state.topic}: {state.detail}", file=sys.stderr)
    failed = [state for state in states if not state.ready]
    if failed:
        print(f"error: {len(failed)} of {len(states)} topic(s) not ready", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
