"""Resumable downloads: a 200 MB transfer cut half-way by the server resumes from the bytes
already held (the server serves little more than the file once), and a puller stopped in
the middle of a job is continued by the next one, from its checkpoint. The bytes are held
in an incomplete quarantine object, written once; with the hash state saved at every
checkpoint, sha256 and sha1 come out right after a resume."""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db import Database
from pull.ingest import PullIngest
from pull.schema import pull_files, pull_jobs
from tests.helpers import wait_for
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer

SIZE = 200 * 1000 * 1000
SLACK = 16 * 1024 * 1024  # reads in flight when the connection dropped are read again


def big_file(server: SFTPTestServer, name: str, size: int) -> str:
    path = server.root / "outgoing" / name
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        block = os.urandom(1024 * 1024)
        written = 0
        while written < size:
            chunk = block[: size - written]
            handle.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            block = block[1:] + block[:1]
    return digest.hexdigest()


def quarantined(harness: PullHarness) -> list[Path]:
    root = Path(harness.settings.workdir) / harness.settings.s3_quarantine
    return [p for p in root.rglob("*") if p.is_file() and ".incomplete" not in p.parts
            and ".resumable" not in p.parts]


def incomplete_objects(harness: PullHarness) -> list[Path]:
    root = Path(harness.settings.workdir) / harness.settings.s3_quarantine / ".resumable"
    return list(root.iterdir()) if root.is_dir() else []


def test_transfer_cut_half_way_resumes(tmp_path: Path, sftp: SFTPTestServer) -> None:
    sha256 = big_file(sftp, "big.bin", SIZE)
    sftp.cut_after = SIZE // 2
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp, MAX_LENGTH=str(SIZE + 1)) as harness:
        job = harness.run_job("acme", timeout=110)
        assert job["state"] == "completed", job
        assert sftp.cuts == 1 and sftp.connections == 2
        # resumed, not restarted: the file once, plus what was in flight at the cut
        assert SIZE <= sftp.bytes_served < SIZE + SLACK, sftp.bytes_served
        [row] = harness.uploads()
        assert row["size"] == SIZE and row["sha256"] == sha256
        # written once: into its incomplete object, which became the payload's
        assert row["object_key"].startswith("resumable/")
        assert len(quarantined(harness)) == 1 and not incomplete_objects(harness)
        assert not (Path(harness.settings.workdir) / "pull-work" / "incomplete").exists()
        assert hashlib.sha256(harness.stored(row)).hexdigest() == sha256


@pytest.mark.usefixtures("frequent_checkpoints")
def test_a_stopped_puller_is_continued_by_the_next(tmp_path: Path, sftp: SFTPTestServer) -> None:
    size = 24 * 1024 * 1024
    sha256 = big_file(sftp, "slow.bin", size)
    sftp.read_delay = 0.02  # ~12 MiB/s: the stop comes in the middle
    providers = {"acme": entry(sftp)}
    first = PullHarness(tmp_path, providers, sftp).start()
    try:
        job_id = first.start_job("acme")
        assert first.services is not None
        engine = first.services.database.engine

        def checkpointed() -> int:
            with engine.connect() as conn:
                return int(conn.execute(select(pull_files.c.bytes_done)).scalar() or 0)
        assert wait_for(lambda: checkpointed() > 0, timeout=30)
    finally:
        first.stop()
    held, state = _recorded(tmp_path)
    assert 0 < held < size and state == "running"
    served_before = sftp.bytes_served
    sftp.read_delay = 0.0
    second = PullHarness(tmp_path, providers, sftp).start()
    try:
        job = second.wait_job(job_id, timeout=60)
        assert job["state"] == "completed", job
        assert job["files"]["ingested"] == 1
        # the second puller asked only for what the first had not checkpointed
        assert sftp.bytes_served - served_before <= size - held + SLACK
        [row] = second.uploads()
        assert row["sha256"] == sha256
    finally:
        second.stop()


def _recorded(tmp_path: Path) -> tuple[int, str]:
    """The checkpoint and the job's state, as the database holds them."""
    database = Database(f"sqlite:///{tmp_path / 'work' / 'gateway.sqlite'}")
    try:
        with database.engine.connect() as conn:
            held = int(conn.execute(select(pull_files.c.bytes_done)).scalar() or 0)
            return held, str(conn.execute(select(pull_jobs.c.state)).scalar())
    finally:
        database.close()


def test_listing_is_not_repeated_when_a_job_continues(tmp_path: Path, sftp: SFTPTestServer) -> None:
    """A job listed before a restart keeps its file list: a file added meanwhile waits for
    the next job."""
    (sftp.root / "outgoing" / "a.csv").write_bytes(b"a" * 5_000_000)
    sftp.read_delay = 0.05
    providers = {"acme": entry(sftp)}
    first = PullHarness(tmp_path, providers, sftp).start()
    try:
        job_id = first.start_job("acme")
        assert wait_for(lambda: first.job(job_id)["files"]["total"] == 1, timeout=20)
    finally:
        first.stop()
    (sftp.root / "outgoing" / "b.csv").write_bytes(b"b")
    sftp.read_delay = 0.0
    with PullHarness(tmp_path, providers, sftp) as second:
        job = second.wait_job(job_id)
        assert job["state"] == "completed" and job["files"]["total"] == 1, job
        time.sleep(0.1)
        assert second.run_job("acme")["files"]["ingested"] == 1


def test_large_files_stream_into_quarantine_and_a_slow_one_gives_its_stream_up(
        tmp_path: Path, sftp: SFTPTestServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file over the whole-fetch limit that goes through the incomplete file (stored
    compressed: the gzip stream's state cannot be checkpointed) is written to quarantine
    as it arrives (no second pass), unless its transfer outlasts a third of
    INGEST_DEADLINE (its record would come too late): then it is hashed and ingested from
    the incomplete file."""
    caplog.set_level(logging.INFO)
    fast = big_file(sftp, "fast.bin", 6 * 1024 * 1024)
    (sftp.root / "slow").mkdir()
    slow_path = sftp.root / "slow" / "slow.bin"
    slow_path.write_bytes(os.urandom(3 * 1024 * 1024))
    slow = hashlib.sha256(slow_path.read_bytes()).hexdigest()
    providers = {"acme": entry(sftp, compress=True),
                 "slowpoke": entry(sftp, directory="/slow", compress=True)}
    streamed: list[str] = []
    original = PullIngest.ingest_stream

    async def counted(self: PullIngest, remote_path: str, *args: Any) -> Any:
        streamed.append(remote_path)
        return await original(self, remote_path, *args)

    monkeypatch.setattr(PullIngest, "ingest_stream", counted)
    with PullHarness(tmp_path, providers, sftp, INGEST_DEADLINE="3") as harness:
        assert harness.run_job("acme")["files"]["ingested"] == 1
        assert streamed == ["fast.bin"] and "slow transfer" not in caplog.text
        sftp.read_delay = 0.2  # 12 reads of 256 KiB, 4 at a time... well over 1 s
        job = harness.run_job("slowpoke")
        assert job["files"]["ingested"] == 1, job
        assert "slow.bin slow transfer: ingested from the incomplete file" in caplog.text
        assert streamed == ["fast.bin"]
        assert sorted(str(r["sha256"]) for r in harness.uploads()) == sorted([fast, slow])
        for row in harness.uploads():
            content = gzip.decompress(harness.stored(row))
            assert hashlib.sha256(content).hexdigest() == row["sha256"]
        assert len(quarantined(harness)) == 2
        incomplete = Path(harness.settings.workdir) / harness.settings.s3_quarantine / ".incomplete"
        assert not any(incomplete.iterdir())  # the stream given up left nothing behind
