"""Downloads into incomplete quarantine objects (pull/download.py ``ObjectPart``): each
byte written once, and every guarantee of the incomplete file kept: sha256 and sha1 right
after a cut, an object whole but not yet recorded recorded without fetching it again, a
lost object fetched again from the start, a failed file's object removed, and the tus
sweeper leaving a pending download's object alone."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.ingest import Ingestor
from core.resumable_tasks import ResumableSweeper
from db import Database
from pull import store
from pull.schema import pull_files
from pull.store import Remote
from tests.helpers import wait_for
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer
from tests.pull.test_resume import big_file, incomplete_objects, quarantined

MIB = 1024 * 1024


def test_sha256_and_sha1_are_right_after_a_cut(tmp_path: Path, sftp: SFTPTestServer) -> None:
    """The hash states saved with the checkpoint continue where the cut left them."""
    from tests.watcher.harness import read_topics

    size = 24 * MIB
    sha256 = big_file(sftp, "mesh.obj", size)
    data = (sftp.root / "outgoing" / "mesh.obj").read_bytes()
    sftp.cut_after = size // 2
    providers = {"meshes": entry(sftp, service="assets", category="obj")}
    with PullHarness(tmp_path, providers, sftp, MAX_LENGTH=str(size + 1)) as harness:
        job = harness.run_job("meshes")
        assert job["state"] == "completed" and job["files"]["ingested"] == 1, job
        assert sftp.cuts == 1 and sftp.bytes_served < 2 * size  # resumed, not restarted
        [row] = harness.uploads()
        assert row["sha256"] == sha256 and row["object_key"].startswith("resumable/")
        assert harness.stored(row) == data
        events = read_topics(harness.settings, ["platform.asset-transfer"],
                             lambda found: len(found) >= 2)
    sha1 = hashlib.sha1(data).hexdigest()  # noqa: S324 - the events name it
    assert sorted(e["uncompressed_sha1_hash"] for e in events) == [sha1, sha1]


def test_an_object_whole_but_not_recorded_is_recorded_without_fetching_it_again(
        tmp_path: Path, sftp: SFTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    size = 6 * MIB
    sha256 = big_file(sftp, "whole.bin", size)
    original = Ingestor.record_stored
    calls: list[str] = []

    async def fails_once(self: Ingestor, *args: Any, **kwargs: Any) -> Any:
        calls.append("record")
        if len(calls) == 1:
            raise OperationalError("INSERT INTO uploads", {}, Exception("database is locked"))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Ingestor, "record_stored", fails_once)
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp) as harness:
        job = harness.run_job("acme")
        assert job["state"] == "completed" and job["files"]["ingested"] == 1, job
        assert calls == ["record", "record"]
        assert sftp.bytes_served == size  # the second attempt fetched nothing
        [row] = harness.uploads()
        assert row["sha256"] == sha256
        assert hashlib.sha256(harness.stored(row)).hexdigest() == sha256
        assert len(quarantined(harness)) == 1 and not incomplete_objects(harness)


@pytest.mark.usefixtures("frequent_checkpoints")
def test_a_lost_incomplete_object_is_fetched_again_from_the_start(
        tmp_path: Path, sftp: SFTPTestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    size = 24 * MIB
    sha256 = big_file(sftp, "slow.bin", size)
    sftp.read_delay = 0.02
    providers = {"acme": entry(sftp)}
    first = PullHarness(tmp_path, providers, sftp).start()
    try:
        job_id = first.start_job("acme")
        assert wait_for(lambda: _checkpointed(first) > 0, timeout=30)
    finally:
        first.stop()
    [lost] = incomplete_objects(first)
    lost.unlink()
    sftp.read_delay = 0.0
    with PullHarness(tmp_path, providers, sftp) as second:
        job = second.wait_job(job_id)
        assert job["state"] == "completed" and job["files"]["ingested"] == 1, job
        [row] = second.uploads()
        assert row["sha256"] == sha256
        assert hashlib.sha256(second.stored(row)).hexdigest() == sha256
    assert "unusable" in caplog.text and "starting again" in caplog.text


def _checkpointed(harness: PullHarness) -> int:
    assert harness.services is not None
    with harness.services.database.engine.connect() as conn:
        return int(conn.execute(select(pull_files.c.bytes_done)).scalar() or 0)


@pytest.mark.usefixtures("frequent_checkpoints")
def test_a_puller_that_loses_its_lease_stops_writing_and_the_next_continues(
        tmp_path: Path, sftp: SFTPTestServer) -> None:
    """No block is written and no checkpoint recorded once the lease is lost: the object
    the next holder continues is the one the last checkpoint describes."""
    from pull.job import JobRunner

    size = 24 * MIB
    sha256 = big_file(sftp, "slow.bin", size)
    sftp.read_delay = 0.02
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp).start(puller=False) as harness:
        assert harness.services is not None
        services, provider = harness.services, harness.providers["acme"]
        job_id = store.create_job(services.database.engine, "acme", "api")
        held = [True]

        async def lose_it_after_a_checkpoint() -> None:
            while _checkpointed(harness) == 0:
                await asyncio.sleep(0.01)
            held[0] = False

        async def first() -> str:
            runner = JobRunner(services, provider, job_id, lambda: held[0])
            watcher = asyncio.get_running_loop().create_task(lose_it_after_a_checkpoint())
            try:
                return await runner.run()
            finally:
                await watcher

        assert harness.call(first()) == "lost"
        recorded, [part] = _checkpointed(harness), incomplete_objects(harness)
        written = part.stat().st_size
        assert 0 < recorded <= written < size  # stopped in the middle, not after the file
        time.sleep(0.3)  # nothing more is written, nothing more recorded
        assert (_checkpointed(harness), part.stat().st_size) == (recorded, written)
        sftp.read_delay = 0.0
        runner = JobRunner(services, provider, job_id)
        assert harness.call(runner.run()) == "completed"
        [row] = harness.uploads()
        assert row["sha256"] == sha256
        assert hashlib.sha256(harness.stored(row)).hexdigest() == sha256


def test_a_file_that_changes_while_fetched_takes_its_object_with_it(
        tmp_path: Path, sftp: SFTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sftp.root / "outgoing" / "moving.bin"
    path.write_bytes(os.urandom(3 * MIB))
    listed = store.record_listing

    def then_change(*args: Any) -> None:
        listed(*args)
        with open(path, "ab") as handle:
            handle.write(b"more")

    monkeypatch.setattr(store, "record_listing", then_change)
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp) as harness:
        job = harness.run_job("acme")
        assert job["files"]["changed"] == 1, job
        assert harness.uploads() == []
        assert quarantined(harness) == [] and incomplete_objects(harness) == []


def test_the_tus_sweeper_leaves_a_pending_download_s_object_alone(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'pull.sqlite'}")
    try:
        database.migrate()
        engine = database.engine
        job_id = store.create_job(engine, "acme", "api")
        store.record_listing(engine, job_id, "acme", [Remote("a", 10, 0), Remote("b", 10, 0)],
                             0)
        first, second = store.pending_files(engine, job_id)
        for row, key in ((first, "resumable/a"), (second, "resumable/b")):
            store.checkpoint(engine, row.id, 5, json.dumps({"key": key}))
        store.finish_file(engine, second.id, "failed", error="x")
        keys = ["resumable/a", "resumable/b", "resumable/tus"]
        assert store.live_object_keys(engine, keys) == {"resumable/a"}

        discarded: list[str] = []
        storage = SimpleNamespace(
            list_resumable=lambda bucket: [(key, time.time() - 7200) for key in keys],
            discard_resumable=lambda bucket, key: discarded.append(key))
        tus_database = SimpleNamespace(live_tus_keys=lambda found: {"resumable/tus"})
        resumable = SimpleNamespace(storage=storage, database=tus_database, lease_seconds=30.0)
        sweeper = ResumableSweeper(resumable,  # type: ignore[arg-type]
                                   owners=[lambda found: store.live_object_keys(engine, found)])
        assert sweeper.discard_leftovers(time.time() - 3600) == 1
        assert discarded == ["resumable/b"]
    finally:
        database.close()


@pytest.mark.s3
def test_a_cut_transfer_resumes_into_its_multipart_upload_on_s3(
        tmp_path: Path, sftp: SFTPTestServer, moto_server: str) -> None:
    """On S3 the incomplete object is a multipart upload (parts of 8 MiB, a shorter tail
    kept as a small object at each checkpoint): resumed after a cut, completed once, and
    nothing of it left behind."""
    import boto3

    size = 20 * MIB + 12345
    sha256 = big_file(sftp, "big.bin", size)
    sftp.cut_after = size // 2
    bucket = f"q-{os.urandom(4).hex()}"
    env = {"STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": moto_server, "S3_QUARANTINE": bucket,
           "S3_PERM": f"p-{bucket}", "S3_REJECT": f"r-{bucket}", "MAX_LENGTH": str(size + 1)}
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp, **env) as harness:
        job = harness.run_job("acme")
        assert job["state"] == "completed" and job["files"]["ingested"] == 1, job
        assert sftp.cuts == 1 and sftp.bytes_served < 2 * size
        [row] = harness.uploads()
        assert row["sha256"] == sha256 and row["object_key"].startswith("resumable/")
        assert hashlib.sha256(harness.stored(row)).hexdigest() == sha256
    client = boto3.client("s3", endpoint_url=moto_server)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [row["object_key"]]  # no tail left
