"""A database outage longer than the relay's lease duplicated what a relay had sent just
before it: its batch was acknowledged by the broker, the outage kept it from recording
that, its lease ran out meanwhile, and once the database was back another relay claimed
and sent the batch again (the fault run: 64 duplicates on platform.upload.available
after a 30 s PostgreSQL cut). Two relays, each with its own engine through a TCP proxy in
front of PostgreSQL, on the mock Kafka cluster: every message is delivered once."""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bus.kafka import KafkaBus
from core.relay import OutboxRelay
from core.settings import Settings
from db import Database, OutboxItem, utcnow
from tests.core.test_relay_concurrency import CountingProducer, Tally
from tests.db.test_database import _row
from tests.faults.tcpproxy import TcpProxy
from tests.helpers import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

LEASE = 1.0
UPLOADS = 20


def test_a_batch_sent_before_a_database_outage_is_not_sent_again_by_another_relay(
        pg_url: str, kafka_bootstrap: str) -> None:
    setup = Database(pg_url)
    setup.migrate()
    with setup.engine.begin() as conn:
        conn.execute(text("TRUNCATE uploads, upload_events, outbox RESTART IDENTITY"))
    setup.close()
    own = uuid.uuid4().hex[:8]
    announce_topic, status_topic = f"outage-{own}-announce", f"outage-{own}-status"
    setup = Database(pg_url, status_topic=status_topic)
    for n in range(UPLOADS):
        rid = f"o{own}-{n}"
        setup.record_upload(_row(rid), utcnow(), [OutboxItem(
            announce_topic, rid, {"request_id": rid}, request_id=rid, on_sent_status="announced")])
    proxy = TcpProxy("127.0.0.1", 5432).start()
    host, name = pg_url.rsplit("@", 1)[0], pg_url.rsplit("/", 1)[1]
    proxied = f"{host}@127.0.0.1:{proxy.port}/{name}"
    settings = Settings.from_env({"KAFKAMQ": kafka_bootstrap, "URL_SIGNING_KEY": "k"})
    tally = Tally()
    databases = [Database(proxied, status_topic=status_topic) for _ in range(2)]
    relays = [OutboxRelay(db, KafkaBus(settings), lease=LEASE, hold=3.0) for db in databases]
    producers = [CountingProducer(KafkaBus(settings).producer(), n, tally) for n in range(2)]
    first, second = relays
    try:
        # the first relay sends every message; the broker acknowledges them
        assert first.deliver_once(producers[0]) == 2 * UPLOADS  # announcements, "stored"
        proxy.cut()  # PostgreSQL down before it could record that
        for relay, producer in zip(relays, producers):
            with pytest.raises(DBAPIError):
                relay.deliver_once(producer)
        time.sleep(LEASE + 0.5)  # the outage outlasts the first relay's lease
        proxy.restore()
        # the other relay is back first
        assert second.deliver_once(producers[1]) == 0, "it sent the first relay's batch again"
        first.deliver_once(producers[0])  # records its batch, sends the "announced" statuses

        def drained() -> bool:
            for relay, producer in zip(relays, producers):
                relay.deliver_once(producer)
            return setup.outbox_depth() == 0
        assert wait_for(drained, 30, interval=0.2), setup.outbox_depth()
    finally:
        proxy.restore()
        for producer in producers:
            producer.close()
        for db in databases:
            db.close()
        proxy.stop()
    twice = {key: count for key, count in tally.messages.items() if count != 1}
    assert twice == {}, f"{len(twice)} messages delivered more than once"
    assert len(tally.messages) == 3 * UPLOADS  # announcement, "stored", "announced"
    setup.close()
