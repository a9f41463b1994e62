"""Create every topic the system uses on the Kafka cluster named by KAFKAMQ (idempotent:
topics that exist are left alone). With KAFKAMQ unset there is nothing to create: the
embedded bus makes topics as they are used.

    KAFKAMQ=localhost:9092 python create_topics.py
"""
from __future__ import annotations

import logging
import sys

from areas.jobs import TOPICS as AREA_TOPICS
from bus import get_bus
from bus.topics import all_topics
from core.settings import Settings, SettingsError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.kafka_servers:
        print("KAFKAMQ is not set: the embedded bus needs no topics created")
        return 0
    topics = all_topics(settings) + list(AREA_TOPICS)
    bus = get_bus(settings)
    try:
        bus.create_topics(topics)
    finally:
        bus.close()
    for topic in topics:
        print(f"topic ready: {topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
