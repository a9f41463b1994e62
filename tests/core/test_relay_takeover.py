"""Issue 12: the claims of an outbox relay that died (SIGKILL) are taken by another relay
as soon as its advisory lock is gone, not after the 30 s lease; a live relay's unexpired
claims are never taken, also after it lost its lock connection and took the lock again
(db/presence.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Iterator

import pytest
from sqlalchemy import text

from db import Database, OutboxItem, utcnow
from db.presence import RelayPresence
from tests.helpers import wait_for

pytestmark = pytest.mark.postgres

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# a relay in a process of its own: takes its lock, claims everything, says so, and waits
# (as if sending) until it is killed
CLAIMER = """
import sys, time
from db import Database
database = Database(sys.argv[1])
presence = database.relay_presence()
presence.start()
rows = database.outbox_sent_and_claim([], 100, 30.0, None, presence)
print(presence.id, len(rows), flush=True)
time.sleep(600)
"""


@pytest.fixture
def database(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    db.migrate()
    with db.engine.begin() as conn:
        conn.execute(text("TRUNCATE uploads, upload_events, outbox RESTART IDENTITY"))
    yield db
    db.close()


def _messages(database: Database, n: int) -> None:
    database.record_messages([OutboxItem("platform.upload.available", f"k{i}", {"i": i})
                              for i in range(n)])


def _claimers(database: Database) -> set[str]:
    with database.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT claimed_by FROM outbox"))}


def _absent(database: Database, presence: RelayPresence) -> bool:
    presence._probed_at = 0.0
    with database.engine.begin() as conn:
        presence.dead(conn, utcnow())
    return bool(presence._absent)


@pytest.mark.timeout(60)
def test_a_killed_relays_claims_are_taken_before_the_lease_runs_out(
        database: Database, pg_url: str) -> None:
    _messages(database, 5)
    process = subprocess.Popen([sys.executable, "-c", CLAIMER, pg_url], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        relay_id, claimed = map(int, process.stdout.readline().split())
        assert claimed == 5
        assert _claimers(database) == {f"relay:{relay_id}"}
        other = RelayPresence(database.engine, grace=0.0)  # takes a dead claim at once
        other.start()
        try:
            # alive: its unexpired claims are not taken, however often the other tries
            for _ in range(3):
                other._probed_at = 0.0
                assert database.outbox_sent_and_claim([], 100, 30.0, None, other) == []
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            # dead: taken once the other's probe sees its lock gone (the lease has 30 s)
            taken = wait_for(lambda: database.outbox_sent_and_claim([], 100, 30.0, None, other),
                             timeout=10.0)
            assert len(taken) == 5
            assert _claimers(database) == {f"relay:{other.id}"}
        finally:
            other.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.timeout(60)
def test_a_live_relay_that_lost_its_lock_connection_takes_it_again(database: Database) -> None:
    _messages(database, 3)
    live = RelayPresence(database.engine)
    assert live.keep()
    other = RelayPresence(database.engine, grace=0.0)
    other.keep()
    try:
        assert len(database.outbox_sent_and_claim([], 100, 30.0, None, live)) == 3
        first_id = live.id
        with database.engine.begin() as conn:  # its backend ends (a restart, a cut ...)
            assert conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = :ns AND objid = :id AND objsubid = 2"),
                {"ns": 0x72656C79, "id": first_id}).scalar_one()
        # a relay with the real grace (3 s) that probes in the meantime only notes it
        patient = RelayPresence(database.engine)
        assert wait_for(lambda: _absent(database, patient), timeout=5.0)
        assert database.outbox_sent_and_claim([], 100, 30.0, None, patient) == []
        # the keeper notices and takes the same lock again, well within the grace
        assert live.keep()
        assert live.id == first_id
        for presence in (other, patient):
            presence._probed_at = 0.0
            assert database.outbox_sent_and_claim([], 100, 30.0, None, presence) == []
        assert patient._absent == {}  # back: its absence clock is gone
        assert _claimers(database) == {f"relay:{first_id}"}
    finally:
        live.close()
        other.close()


def test_a_claim_without_the_lock_waits_for_its_lease(database: Database) -> None:
    """A relay whose lock is lost at the moment it claims marks the claim with a random
    name: nobody takes it before the lease runs out."""
    _messages(database, 2)
    lockless = RelayPresence(database.engine)  # never took its lock
    assert len(database.outbox_sent_and_claim([], 100, 30.0, None, lockless)) == 2
    other = RelayPresence(database.engine, grace=0.0)
    other.keep()
    try:
        assert database.outbox_sent_and_claim([], 100, 30.0, None, other) == []
        assert not any(c.startswith("relay:") for c in _claimers(database))
    finally:
        other.close()
