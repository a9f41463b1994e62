"""The fast paths for many small files: a file of at most ``WHOLE_MAX`` bytes is fetched
whole into memory (no incomplete object, no checkpoint, each byte read once) and its bytes
checked against the listing; files' final states are committed in shared transactions
(``Finishes``), each caller answered only once its own row is committed."""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from db import Database
from pull import download, job, store
from pull.download import WHOLE_MAX
from pull.job import Finishes
from pull.schema import pull_files
from pull.store import Remote
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer
from tests.pull.test_pull import put


def test_small_files_are_fetched_whole_and_large_ones_through_an_incomplete_object(
        tmp_path: Path, sftp: SFTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {f"f{i:02d}.bin": i * 997 for i in range(30)}
    sizes |= {"at-limit.bin": WHOLE_MAX, "over-limit.bin": WHOLE_MAX + 1}
    digests = {}
    for name, size in sizes.items():
        data = os.urandom(size)
        put(sftp, name, data)
        digests[name] = hashlib.sha256(data).hexdigest()
    parts: list[str] = []
    original = download.ObjectPart

    def counted(objects: Any, row: Any, *args: Any) -> Any:
        parts.append(row.path)
        return original(objects, row, *args)

    monkeypatch.setattr(job, "ObjectPart", counted)
    monkeypatch.setattr(job, "PartFile", None)  # no incomplete file at all
    checkpoints: list[int] = []
    monkeypatch.setattr(job.JobRunner, "_checkpoint",
                        lambda self, row, offset, state=None: _note(checkpoints, row.size))
    with PullHarness(tmp_path, {"acme": entry(sftp, concurrency=8)}, sftp,
                     MAX_LENGTH=str(4 * WHOLE_MAX)) as harness:
        found = harness.run_job("acme")
        assert found["state"] == "completed" and found["files"]["ingested"] == len(sizes), found
        # only the file over the limit went through an incomplete object (and only it
        # checkpoints)
        assert parts == ["over-limit.bin"]
        assert set(checkpoints) == {WHOLE_MAX + 1}
        assert sftp.bytes_served == sum(sizes.values())  # each byte read once
        assert {r["filename"]: r["sha256"] for r in harness.uploads()} == digests
        assert {i["path"]: i["sha256"] for i in found["items"]} == digests
        for row in harness.uploads():
            assert hashlib.sha256(harness.stored(row)).hexdigest() == row["sha256"]


async def _note(checkpoints: list[int], size: int) -> None:
    checkpoints.append(size)


@pytest.mark.parametrize("change", ["grown", "shrunk", "touched"])
def test_a_small_file_changed_after_its_listing_is_not_ingested(
        tmp_path: Path, sftp: SFTPTestServer, monkeypatch: pytest.MonkeyPatch,
        change: str) -> None:
    path = put(sftp, "report.csv", b"x" * 5000, mtime=1_700_000_000)
    put(sftp, "other.csv", b"other")
    listed = store.record_listing

    def then_change(*args: Any) -> None:
        listed(*args)
        if change == "touched":  # same size, another mtime
            os.utime(path, (1_700_000_100, 1_700_000_100))
        else:
            path.write_bytes(b"x" * (5001 if change == "grown" else 4999))
            os.utime(path, (1_700_000_000, 1_700_000_000))  # the mtime alone would not tell

    monkeypatch.setattr(store, "record_listing", then_change)
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp) as harness:
        found = harness.run_job("acme")
        assert found["state"] == "completed", found
        states = {i["path"]: i["state"] for i in found["items"]}
        assert states == {"report.csv": "changed", "other.csv": "ingested"}
        assert [r["filename"] for r in harness.uploads()] == ["other.csv"]


def test_finishes_share_transactions_and_every_caller_gets_its_failure(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'pull.sqlite'}")
    try:
        database.migrate()
        engine = database.engine
        job_id = store.create_job(engine, "acme", "api")
        store.record_listing(engine, job_id, "acme", [Remote(f"f{i}", i, 0) for i in range(40)], 0)
        rows = store.pending_files(engine, job_id)
        calls: list[int] = []

        async def db(func: Any, batch: list[Any]) -> None:
            calls.append(len(batch))
            await asyncio.get_running_loop().run_in_executor(None, func, engine, batch)

        async def finish_all() -> None:
            finishes = Finishes(db)
            await asyncio.gather(*(finishes.record(r.id, "ingested", sha256=f"{r.id:064x}",
                                                   bytes_done=r.size) for r in rows))

        asyncio.run(finish_all())
        assert sum(calls) == len(rows) and len(calls) < len(rows)  # batched
        with engine.connect() as conn:
            done = conn.execute(select(pull_files.c.id, pull_files.c.state,
                                       pull_files.c.sha256)).tuples().all()
        assert sorted(done) == sorted((r.id, "ingested", f"{r.id:064x}") for r in rows)
    finally:
        database.close()

    async def broken(func: Any, batch: list[Any]) -> None:
        await asyncio.sleep(0)
        raise OperationalError("UPDATE pull_files", {}, Exception("database is locked"))

    async def fail_all() -> list[Any]:
        finishes = Finishes(broken)
        return await asyncio.gather(*(finishes.record(i, "failed", error="x")
                                      for i in range(5)), return_exceptions=True)

    assert all(isinstance(result, OperationalError) for result in asyncio.run(fail_all()))


def test_a_worker_fetches_its_next_file_while_its_last_ones_state_commits(
        tmp_path: Path, sftp: SFTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["a.csv", "b.csv", "c.csv"]
    for name in names:
        put(sftp, name, name.encode() * 100)
    fetched: list[str] = []
    next_fetched = threading.Event()
    batches: list[tuple[list[int], bool]] = []  # ids, whether the next fetch came meanwhile
    fetch, finish = download.fetch_whole, store.finish_files

    async def noted_fetch(session: Any, row: Any) -> bytes:
        fetched.append(row.path)
        if len(fetched) > 1:
            next_fetched.set()
        return await fetch(session, row)

    def slow_finish(engine: Any, finished: Any) -> None:
        # the first file's state waits (bounded) for the second file's fetch: it comes
        # only if the worker does not wait for this commit
        overlapped = next_fetched.wait(10) if not batches else True
        batches.append(([file_id for file_id, _ in finished], overlapped))
        finish(engine, finished)

    monkeypatch.setattr(job, "fetch_whole", noted_fetch)
    monkeypatch.setattr(store, "finish_files", slow_finish)
    with PullHarness(tmp_path, {"acme": entry(sftp, concurrency=1)}, sftp) as harness:
        found = harness.run_job("acme")
        # completed only once every final state is in
        assert found["state"] == "completed" and found["files"]["ingested"] == 3, found
        assert {i["path"]: i["state"] for i in found["items"]} == dict.fromkeys(names,
                                                                                "ingested")
    assert batches[0][1], "the second file was not fetched while the first one's committed"
    # one worker never has two final states uncommitted: one file per transaction
    assert [len(ids) for ids, _ in batches] == [1, 1, 1]


def test_a_final_state_that_cannot_be_committed_stops_the_job_and_the_file_stays_pending(
        tmp_path: Path, sftp: SFTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    put(sftp, "a.csv", b"a" * 100)
    put(sftp, "b.csv", b"b" * 100)

    def locked(engine: Any, finished: Any) -> None:
        raise OperationalError("UPDATE pull_files", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "finish_files", locked)
    with PullHarness(tmp_path, {"acme": entry(sftp, concurrency=1, retries=2)},
                     sftp) as harness:
        found = harness.run_job("acme")
        assert found["state"] == "failed" and "database is locked" in found["reason"], found
        assert found["files"]["pending"] == 2, found
        # the payloads are recorded: the next job finds them as duplicates
        assert sorted(r["filename"] for r in harness.uploads()) == ["a.csv", "b.csv"]
