"""Issue 6, item 6: every broker of the (mock) Kafka cluster is down for 60 s while 1,000
uploads arrive. Every 202'd payload must be announced once the brokers are back, and
reach ``platform.upload.available`` (the test validator runs in the same process):
exactly one distinct message per request_id on each topic, duplicates only as at-least-once
allows (counted and reported).

The figures (uploads during the outage, lost, duplicates, time to drain) are printed and
written to ``<tmp>/outage-figures.json``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bus.kafka import KafkaBus
from bus.topics import all_topics
from core.settings import Settings
from tests.e2e import Gateway
from tests.faults.tools import count_by, run_concurrently, upload, uploads_table
from tests.helpers import wait_for

pytestmark = [pytest.mark.kafka]

OUTAGE_SECONDS = 60.0
UPLOADS = 1000
ANNOUNCE = "platform.upload.testareno"
AVAILABLE = "platform.upload.available"


class Tally:
    """Reads two topics in a thread; records every request_id seen and when."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        # the test's own consumer reports every refused reconnect while the brokers are down
        self._rdkafka = logging.getLogger("bus.kafka.librdkafka")
        self._level = self._rdkafka.level
        self._rdkafka.setLevel(logging.CRITICAL)
        bus = KafkaBus(settings, session_timeout=1.0)
        self.consumer = bus.consumer(f"outage-test-{time.monotonic_ns()}", topics)
        self.seen: dict[str, list[str]] = {topic: [] for topic in topics}
        self.last_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> Tally:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.2)
            if message is None:
                continue
            request_id = json.loads(message.value).get("request_id")
            with self._lock:
                self.seen[message.topic].append(request_id)
                self.last_at[request_id + "@" + message.topic] = time.monotonic()

    def distinct(self, topic: str) -> set[str]:
        with self._lock:
            return set(self.seen[topic])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()
        self._rdkafka.setLevel(self._level)


@pytest.mark.timeout(420)
def test_broker_outage_of_60s_during_1000_uploads(tmp_path: Path, kafka_bootstrap: str,  # type: ignore[no-untyped-def]
                                                  kafka_topics, kafka_cluster) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "KAFKAMQ": kafka_bootstrap}
    settings = Settings.from_env(env)
    kafka_topics(all_topics(settings))
    gateway = Gateway(env).start()
    tally = Tally(settings, [ANNOUNCE, AVAILABLE]).start()
    try:
        # warm up: the gateway's, the validator's and the test's consumers have joined
        warm = upload(gateway.port, b"warm-up")
        assert warm.status == 202, warm
        assert wait_for(lambda: warm.request_id in tally.distinct(AVAILABLE), 60)

        kafka_cluster.set_down()
        down_at = time.monotonic()
        pace = (OUTAGE_SECONDS - 10) / UPLOADS  # spread the uploads over the outage

        def job(index: int) -> Any:
            time.sleep(max(0.0, down_at + index * pace - time.monotonic()))
            return upload(gateway.port, f"payload {index} ".encode() * 50, index)

        results = run_concurrently(UPLOADS, 16, job)
        uploads_done = time.monotonic() - down_at
        accepted = {r.request_id for r in results if r.status == 202}
        refused = count_by(r.status for r in results if r.status != 202)
        assert uploads_done < OUTAGE_SECONDS, "uploads did not finish inside the outage"
        announced_during = tally.distinct(ANNOUNCE) & accepted
        time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
        kafka_cluster.set_up()
        up_at = time.monotonic()

        def drained() -> bool:
            return accepted <= tally.distinct(ANNOUNCE) and accepted <= tally.distinct(AVAILABLE)
        wait_for(drained, 180, interval=0.2)
        drain_seconds = time.monotonic() - up_at
        time.sleep(3)  # let late duplicates, if any, arrive before counting
        lost_announce = accepted - tally.distinct(ANNOUNCE)
        lost_available = accepted - tally.distinct(AVAILABLE)
        duplicates = {
            topic: sum(n - 1 for rid, n in count_by(tally.seen[topic]).items() if rid in accepted)
            for topic in (ANNOUNCE, AVAILABLE)
        }
        rows = uploads_table(settings.workdir)
        statuses = count_by(rows[rid]["status"] for rid in accepted if rid in rows)
        figures = {
            "uploads_during_outage": len(results), "accepted_202": len(accepted),
            "refused": refused, "outage_seconds": OUTAGE_SECONDS,
            "uploads_took_seconds": round(uploads_done, 1),
            "announced_while_down": len(announced_during),
            "lost_announcements": len(lost_announce), "lost_available": len(lost_available),
            "duplicates": duplicates, "drain_seconds": round(drain_seconds, 1),
            "statuses": statuses,
        }
        print("\nbroker outage figures:", json.dumps(figures))
        (tmp_path / "outage-figures.json").write_text(json.dumps(figures, indent=2))
        assert len(accepted) == UPLOADS, refused
        assert not announced_during
        assert not lost_announce and not lost_available, figures
        assert statuses == {"available": UPLOADS}, figures
    finally:
        kafka_cluster.set_up()
        tally.stop()
        assert gateway.stop() == 0
