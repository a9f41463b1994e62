"""Issue 12 item 3: several outbox relays (each with its own engine, as separate
processes have) on one PostgreSQL outbox while uploads keep arriving, over the mock Kafka
cluster: no DeadlockDetected, every message delivered exactly once (no lease runs out
here, so once per claim), and the relays share the work."""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from typing import Sequence

import pytest
from sqlalchemy import text

from bus import OutMessage, Producer, Refused
from bus.kafka import KafkaBus
from core.relay import OutboxRelay
from core.settings import Settings
from db import Database, OutboxItem, utcnow
from tests.db.test_database import _announce, _row
from tests.helpers import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

RELAYS = 4
UPLOADS_BEFORE, UPLOADS_DURING = 600, 600


class CountingProducer(Producer):
    """The real producer; counts what the broker acknowledged, per message and relay."""

    def __init__(self, inner: Producer, relay: int, tally: Tally) -> None:
        self.inner, self.relay, self.tally = inner, relay, tally

    def send(self, messages: Sequence[OutMessage], timeout: float) -> list[bool | Refused]:
        results = self.inner.send(messages, timeout)
        self.tally.add(self.relay, [m for m, ok in zip(messages, results) if ok])
        return results

    def close(self) -> None:
        self.inner.close()


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: Counter[tuple[str, str | None, str | None]] = Counter()
        self.by_relay: Counter[int] = Counter()

    def add(self, relay: int, messages: list[OutMessage]) -> None:
        with self.lock:
            for message in messages:
                status = json.loads(message.value).get("status")
                self.messages[(message.topic, message.key, status)] += 1
            self.by_relay[relay] += len(messages)


class CountingBus(KafkaBus):
    def __init__(self, settings: Settings, relay: int, tally: Tally) -> None:
        super().__init__(settings)
        self.relay, self.tally = relay, tally

    def producer(self) -> CountingProducer:  # type: ignore[override]
        return CountingProducer(super().producer(), self.relay, self.tally)


@pytest.mark.timeout(180)
def test_relays_share_one_postgres_outbox_without_deadlocks(
        pg_url: str, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="core.relay")
    setup = Database(pg_url)
    setup.migrate()
    with setup.engine.begin() as conn:
        conn.execute(text("TRUNCATE uploads, upload_events, outbox RESTART IDENTITY"))
    setup.close()
    # topics of this test's own: announcements left on the real ones would be read by
    # the validators of later tests on the same (session) cluster
    own = uuid.uuid4().hex[:8]
    announce_topic, status_topic = f"relay-{own}-announce", f"relay-{own}-status"
    setup = Database(pg_url, status_topic=status_topic)
    prefix = f"c{time.monotonic_ns()}-"

    def announce(request_id: str) -> OutboxItem:
        return OutboxItem(announce_topic, request_id, {"request_id": request_id},
                          request_id=request_id, on_sent_status="announced")

    for n in range(UPLOADS_BEFORE):
        setup.record_upload(_row(f"{prefix}{n}"), utcnow(), [announce(f"{prefix}{n}")])
    settings = Settings.from_env({"KAFKAMQ": kafka_bootstrap, "URL_SIGNING_KEY": "k"})
    tally = Tally()
    databases = [Database(pg_url, status_topic=status_topic) for _ in range(RELAYS)]
    relays = [OutboxRelay(db, CountingBus(settings, number, tally))
              for number, db in enumerate(databases)]

    def feed() -> None:
        for n in range(UPLOADS_BEFORE, UPLOADS_BEFORE + UPLOADS_DURING):
            setup.record_upload(_row(f"{prefix}{n}"), utcnow(), [announce(f"{prefix}{n}")])
            for relay in relays:
                relay.wake()

    feeder = threading.Thread(target=feed)
    try:
        for relay in relays:
            relay.start()
        feeder.start()
        feeder.join(120)
        total = UPLOADS_BEFORE + UPLOADS_DURING
        # announcement, "stored" and "announced" statuses per upload
        assert wait_for(lambda: sum(tally.messages.values()) >= 3 * total
                        and setup.outbox_depth() == 0, timeout=90, interval=0.2), (
            sum(tally.messages.values()), setup.outbox_depth())
    finally:
        for relay in relays:
            relay.stop()
        for db in databases:
            db.close()
    expected = {key for n in range(total) for key in (
        (announce_topic, f"{prefix}{n}", None),
        (status_topic, f"{prefix}{n}", "stored"),
        (status_topic, f"{prefix}{n}", "announced"))}
    assert set(tally.messages) == expected
    twice = {key: count for key, count in tally.messages.items() if count != 1}
    assert twice == {}, f"{len(twice)} messages delivered more than once"
    failures = [r.getMessage() for r in caplog.records if r.name == "core.relay"]
    assert failures == [], failures[:3]
    assert all(tally.by_relay[number] > 0 for number in range(RELAYS)), tally.by_relay
    announced = {row["status"] for row in setup.get_uploads(
        [f"{prefix}{n}" for n in range(total)]).values()}
    assert announced == {"announced"}
    setup.close()


def test_a_claim_takes_no_more_than_its_limit_on_a_fresh_postgres_table() -> None:
    """As ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` the planner
    rescanned the pick for each row on a table without statistics, each rescan skipping
    the rows just locked: claim_outbox(4) leased all 10 messages."""
    from sqlalchemy import create_engine

    from tests.fixtures.db import PG_ADMIN_URL

    name = f"gw_claim_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    database = Database(f"{base}/{name}")
    try:
        database.migrate()
        for n in range(5):
            database.record_upload(_row(f"f{n}"), utcnow(), [_announce(f"f{n}")])
        assert [len(database.claim_outbox(4)) for _ in range(4)] == [4, 4, 2, 0]
    finally:
        database.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
