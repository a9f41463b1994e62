"""Group commit: several uploads in one transaction, a duplicate fails only itself, and
the relay's batched status update matches the one-by-one one."""
import asyncio
import json

from sqlalchemy.exc import IntegrityError

from core.groupcommit import GroupCommitter
from db import Database, utcnow
from tests.db.test_database import _announce, _row


def test_record_uploads_batch_and_duplicate(database: Database) -> None:
    database.record_upload(_row("old", object_key="k-old"), utcnow(), [])
    entries = [(_row(f"r{i}", object_key=f"k{i}"), utcnow(), [_announce(f"r{i}")])
               for i in range(3)]
    entries.append((_row("old", object_key="k-dup"), utcnow(), []))
    entries.append((_row("r1", object_key="k-dup2"), utcnow(), []))
    results = database.record_uploads(entries)
    assert results[:3] == [None, None, None]
    assert all(isinstance(r, IntegrityError) for r in results[3:])
    assert [database.get_upload(f"r{i}")["object_key"] for i in range(3)] == ["k0", "k1", "k2"]
    assert database.known_object_keys(["k-dup", "k-dup2"]) == set()


def test_group_committer_answers_each_caller(database: Database) -> None:
    committer = GroupCommitter(database, max_batch=4)

    async def record_all() -> list[object]:
        calls = [committer.record(_row(f"g{i}", object_key=f"g{i}"), utcnow(),
                                  [_announce(f"g{i}")]) for i in range(10)]
        calls.append(committer.record(_row("g0", object_key="dup"), utcnow(), []))
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        results = asyncio.run(record_all())
    finally:
        committer.close()
    assert results[:10] == [None] * 10
    assert isinstance(results[10], IntegrityError)
    assert all(database.get_upload(f"g{i}")["status"] == "stored" for i in range(10))


def test_outbox_sent_in_batch_records_each_status_once(database: Database) -> None:
    for i in range(3):
        database.record_upload(_row(f"b{i}", object_key=f"b{i}"), utcnow(), [_announce(f"b{i}")])
    rows = database.claim_outbox(100)
    database.outbox_sent(rows + rows)  # a redelivered batch changes nothing more
    for i in range(3):
        assert database.get_upload(f"b{i}")["status"] == "announced"
        assert [e["status"] for e in database.timeline(f"b{i}")].count("announced") == 1
    statuses = [json.loads(r.value)["status"] for r in database.claim_outbox(100)]
    assert statuses == ["announced"] * 3
