"""SQLite's relay presence (db/presence.py, ``FileRelayPresence``): a relay holds a ``flock``
on ``<database>.relays/<id>`` while it lives, and the unexpired claims of a relay that was
SIGKILLed are taken at once by another relay instead of after their 30 s lease (before,
SQLite had leases only); a live relay's claims are never taken."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import text

from bus.liveness import DRAFT_AGE, gone
from core.relay import OutboxRelay
from db import Database, OutboxItem
from db.presence import FileRelayPresence
from tests.core.test_relay_takeover import CLAIMER, ROOT  # the claimer runs here on SQLite
from tests.helpers import wait_for


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    database.migrate()
    yield database
    database.close()


def _claimers(database: Database) -> set[str]:
    with database.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT claimed_by FROM outbox"))}


def _claim(database: Database, presence: FileRelayPresence) -> int:
    presence._probed_at = 0.0  # probe now, not after PROBE_INTERVAL
    return len(database.outbox_sent_and_claim([], 100, 30.0, None, presence))


@pytest.mark.timeout(60)
def test_a_killed_relays_claims_are_taken_at_once(sqlite_db: Database, tmp_path: Path) -> None:
    sqlite_db.record_messages([OutboxItem("platform.upload.available", f"k{i}", {"i": i})
                               for i in range(5)])
    process = subprocess.Popen([sys.executable, "-c", CLAIMER, str(sqlite_db.url)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    relays = tmp_path / "gateway.sqlite.relays"
    try:
        assert process.stdout is not None
        relay_id, claimed = process.stdout.readline().split()
        assert claimed == "5" and (relays / relay_id).exists()
        assert _claimers(sqlite_db) == {f"relayf:{relay_id}"}
        other = sqlite_db.relay_presence()
        assert isinstance(other, FileRelayPresence)
        other.start()
        try:
            for _ in range(3):  # alive: its unexpired claims are not taken
                assert _claim(sqlite_db, other) == 0
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            # dead: taken at the next probe (the lease has 30 s), its file removed
            assert wait_for(lambda: _claim(sqlite_db, other), timeout=5.0) == 5
            assert _claimers(sqlite_db) == {f"relayf:{other.id}"}
            assert sorted(os.listdir(relays)) == [other.id]
        finally:
            other.close()
        assert os.listdir(relays) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_files_drafts_and_names(tmp_path: Path) -> None:
    relays = tmp_path / "db.relays"
    relays.mkdir()
    left = uuid.uuid4().hex
    (relays / left).touch()  # a relay that died without claims: nobody holds it
    old_draft, new_draft = relays / f".{uuid.uuid4().hex}.draft", relays / f".{uuid.uuid4().hex}.draft"
    old_draft.touch()
    os.utime(old_draft, (time.time() - DRAFT_AGE - 5,) * 2)
    new_draft.touch()
    first, second = FileRelayPresence(relays), FileRelayPresence(relays)
    first.start()
    second.start()
    try:
        assert sorted(os.listdir(relays)) == sorted([first.id, second.id, new_draft.name])
        assert first.claimer() == f"relayf:{first.id}"
        assert not gone(relays, second.id) and not gone(relays, first.id)  # each holds its lock
        assert gone(relays, uuid.uuid4().hex)  # no file: gone
        assert not gone(relays, "../../etc/passwd")  # not an id: says nothing
    finally:
        second.close()
    assert gone(relays, second.id)
    first.close()
    assert sorted(os.listdir(relays)) == [new_draft.name]


def test_without_its_file_a_relay_claims_with_random_names(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the directory cannot be made: no presence, leases only
    presence = FileRelayPresence(blocked)
    presence.start()
    assert not presence.claimer().startswith("relayf:")
    assert presence.claimer() != presence.claimer()
    presence.close()


def test_a_relay_on_sqlite_claims_under_its_file(sqlite_db: Database, tmp_path: Path) -> None:
    from bus.local import LocalBus
    from core.settings import Settings

    bus = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    relay = OutboxRelay(sqlite_db, bus, lease=30.0)
    relay.start()
    try:
        presence = relay._presence
        assert isinstance(presence, FileRelayPresence)
        assert (tmp_path / "gateway.sqlite.relays" / presence.id).exists()
    finally:
        relay.stop()
        bus.close()
    assert os.listdir(tmp_path / "gateway.sqlite.relays") == []
