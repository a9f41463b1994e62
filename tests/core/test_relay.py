"""The outbox relay records a batch's delivery in the transaction that leases the next."""
from __future__ import annotations

import json
from pathlib import Path

from bus.local import LocalBus
from core.relay import OutboxRelay
from core.settings import Settings
from db import Database, utcnow
from tests.contracts.bus_contract import consume, group_name
from tests.db.test_database import _announce, _row


def test_delivery_is_recorded_by_the_next_pass_and_at_stop(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    database.migrate()
    bus = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    relay = OutboxRelay(database, bus)
    producer = bus.producer()
    try:
        database.record_upload(_row("r1"), utcnow(), [_announce("r1")])
        assert relay.deliver_once(producer) == 2  # announcement + "stored" status
        assert database.get_upload("r1")["status"] == "stored"  # not recorded yet
        # the next pass records it, and sends the "announced" status it enqueued
        assert relay.deliver_once(producer) == 1
        assert database.get_upload("r1")["status"] == "announced"
        database.record_upload(_row("r2"), utcnow(), [_announce("r2")])
        relay.start()
        relay.wake()
        relay.stop()
        assert database.get_upload("r2")["status"] == "announced"
        assert database.outbox_depth() == 0
        statuses = consume(bus, group_name(), ["platform.payload-status"], 4)
        assert sorted(json.loads(m.value)["status"] + m.key for m in statuses) == [
            "announcedr1", "announcedr2", "storedr1", "storedr2"]
    finally:
        producer.close()
        bus.close()
        database.close()
