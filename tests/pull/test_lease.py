"""One puller per provider across processes: two pullers on one database (SQLite and
PostgreSQL) race for a provider; a lease left by a puller that died is taken over once it
expires."""
from __future__ import annotations

import collections
import time
import uuid
from pathlib import Path

from pull import store
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer


def test_two_pullers_race_for_one_provider(tmp_path: Path, sftp: SFTPTestServer,
                                           database_url: str) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    for n in range(12):
        (sftp.root / "outgoing" / f"f{n:02}.csv").write_bytes(f"file {n}".encode() * 1000)
    sftp.read_delay = 0.02
    providers = {name: entry(sftp, concurrency=2)}
    env = {"DATABASE_URL": database_url}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = PullHarness(tmp_path / "one", providers, sftp, **env)
    two = PullHarness(tmp_path / "two", providers, sftp, **env)
    one.start(poll_seconds=0.05, lease_seconds=5)
    try:
        two.start(poll_seconds=0.05, lease_seconds=5)
        try:
            job_id = one.start_job(name)
            code, answer = two.request("POST", f"/api/v1/pulls/{name}")
            assert code == 409 and answer["job_id"] == job_id and answer["error"] == "job_running"
            job = two.wait_job(job_id)
            assert job["state"] == "completed" and job["files"]["ingested"] == 12, job
        finally:
            two.stop()
    finally:
        one.stop()
    opened = collections.Counter(sftp.opened)
    assert len(opened) == 12 and set(opened.values()) == {1}, opened  # each file fetched once
    assert sftp.connections == 1  # only the lease holder connected


def test_a_dead_pullers_lease_is_taken_over(tmp_path: Path, sftp: SFTPTestServer) -> None:
    (sftp.root / "outgoing" / "a.csv").write_bytes(b"a")
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp) as harness:
        assert harness.services is not None
        engine = harness.services.database.engine
        holder = harness.role.puller.holder if harness.role and harness.role.puller else ""
        # wait out the live puller's own lease, then let a "dead" one hold it for 1.5 s
        harness.call(harness.role.puller.stop())  # type: ignore[union-attr]
        assert store.acquire_lease(engine, "acme", "dead-puller", 1.5)
        assert not store.acquire_lease(engine, "acme", holder, 30)
        harness.call(harness.role.puller.start())  # type: ignore[union-attr]
        started = time.monotonic()
        job = harness.run_job("acme")
        assert job["state"] == "completed" and job["files"]["ingested"] == 1
        assert time.monotonic() - started >= 1.0  # it waited for the lease to expire
