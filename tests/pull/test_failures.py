"""Per-file failures (wrong passphrase, corrupt gzip, vanished file, permission error) are
recorded and the job goes on; the server going away ends the job ``failed`` after
retries with backoff; refused host keys fail at once; secrets appear nowhere."""
from __future__ import annotations

import gzip
import logging
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from pull.schema import pull_files, pull_jobs
from tests.fixtures.gpg import Keyring
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer
from tests.pull.test_pull import put

GPG_SECRET = "gpg-passphrase-that-must-not-leak"


def test_bad_files_are_recorded_and_the_job_goes_on(tmp_path: Path, sftp: SFTPTestServer,
                                                    provider_keyring: Keyring,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    os.environ["TEST_GPG_WRONG"] = GPG_SECRET
    put(sftp, "good1.csv.gz", gzip.compress(b"good one"))
    put(sftp, "corrupt.csv.gz", gzip.compress(b"will be cut")[:-12])
    provider_keyring.encrypt(gzip.compress(b"locked"), sftp.root / "outgoing" / "locked.csv.gz.gpg")
    put(sftp, "gone.csv.gz", gzip.compress(b"vanishes"))
    put(sftp, "denied.csv.gz", gzip.compress(b"refused"))
    put(sftp, "good2.csv.gz", gzip.compress(b"good two"))
    sftp.vanish.add("outgoing/gone.csv.gz")
    sftp.deny.add("outgoing/denied.csv.gz")
    providers = {"acme": entry(sftp, steps=["decrypt", "gunzip"], completion="delete",
                               gpg_home=str(provider_keyring.home),
                               gpg_passphrase_env="TEST_GPG_WRONG", concurrency=2)}
    with PullHarness(tmp_path, providers, sftp) as harness:
        job = harness.run_job("acme")
        assert job["state"] == "completed", job
        assert (job["files"]["ingested"], job["files"]["failed"]) == (2, 4)
        errors = {i["path"]: i["error"] for i in job["items"] if i["state"] == "failed"}
        assert errors == {"corrupt.csv.gz": "bad_archive", "locked.csv.gz.gpg": "decrypt_failed",
                          "gone.csv.gz": "vanished", "denied.csv.gz": "permission_denied"}
        assert [i["state"] for i in job["items"]][:4] == ["failed"] * 4  # failures first
        assert sorted(harness.stored(r) for r in harness.uploads()) == [b"good one", b"good two"]
        # only what is durable here was deleted; failed files stay on the server
        left = sorted(p.name for p in (sftp.root / "outgoing").iterdir())
        assert left == ["corrupt.csv.gz", "denied.csv.gz", "locked.csv.gz.gpg"]
        # nothing partial reached quarantine
        quarantine = Path(harness.settings.workdir) / harness.settings.s3_quarantine
        assert len([p for p in quarantine.iterdir() if p.is_file()]) == 2
        # a failed file is not retried until it changes, or until asked
        assert harness.run_job("acme")["files"]["total"] == 0
        job_id = harness.start_job("acme", retry_failed=True)
        again = harness.wait_job(job_id)
        assert again["files"]["failed"] == 3 and again["files"]["total"] == 3
        dump = repr(_tables(harness)) + repr(again) + repr(harness.request(
            "GET", "/api/v1/pulls/providers")) + repr(harness.request("GET", "/api/v1/pulls/jobs"))
    assert GPG_SECRET not in dump and sftp.password not in dump
    assert GPG_SECRET not in caplog.text and sftp.password not in caplog.text
    assert "locked.csv.gz.gpg" in caplog.text  # the failure itself is logged


def _tables(harness: PullHarness) -> list[object]:
    assert harness.services is not None
    with harness.services.database.engine.connect() as conn:
        return [list(conn.execute(select(t)).all()) for t in (pull_jobs, pull_files)]


def test_server_going_away_fails_the_job_after_retries(tmp_path: Path, sftp: SFTPTestServer) -> None:
    put(sftp, "a.csv", b"a" * 1000)
    put(sftp, "b.csv", b"b" * 1000)
    sftp.cut_after = 1  # the first read drops the connection
    with PullHarness(tmp_path, {"acme": entry(sftp, retries=3, retry_delay=0.2)}, sftp) as harness:
        job_id = harness.start_job("acme")
        time.sleep(0.1)
        sftp.go_down()
        started = time.monotonic()
        job = harness.wait_job(job_id)
        elapsed = time.monotonic() - started
        assert job["state"] == "failed", job
        assert job["reason"].endswith("(after 3 attempts)"), job["reason"]
        assert elapsed >= 0.2 + 0.4 - 0.15  # backoff: 0.2 s, then 0.4 s
        assert job["files"]["pending"] == 2 and harness.uploads() == []
        sftp.come_back()
        second = harness.run_job("acme")
        assert second["state"] == "completed" and second["files"]["ingested"] == 2, second
        # the failed job's unfinished files moved to the job that finished them
        assert harness.job(job_id)["files"]["total"] == 0


def test_unknown_host_key_is_refused_at_once(tmp_path: Path, sftp: SFTPTestServer) -> None:
    import asyncssh

    put(sftp, "a.csv", b"a")
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with PullHarness(tmp_path, {"acme": entry(sftp, host_key=stranger, retries=5)}, sftp) as harness:
        job = harness.run_job("acme")
        assert job["state"] == "failed"
        assert "host key" in job["reason"] and "attempts" not in job["reason"]
        assert harness.uploads() == []


def test_wrong_password_is_refused(tmp_path: Path, sftp: SFTPTestServer) -> None:
    put(sftp, "a.csv", b"a")
    os.environ["TEST_WRONG_PASSWORD"] = "not-the-password"
    provider = entry(sftp, password_env="TEST_WRONG_PASSWORD")
    with PullHarness(tmp_path, {"acme": provider}, sftp) as harness:
        job = harness.run_job("acme")
        assert job["state"] == "failed" and "credentials" in job["reason"], job
        assert "not-the-password" not in repr(job)


def test_a_server_that_stops_answering_is_one_that_went_away(tmp_path: Path,
                                                              sftp: SFTPTestServer) -> None:
    put(sftp, "a.csv", b"a" * 1000)
    sftp.read_delay = 60.0  # connects, lists, then never answers a read
    provider = entry(sftp, timeout=0.5, retries=2, retry_delay=0.05)
    with PullHarness(tmp_path, {"acme": provider}, sftp) as harness:
        job = harness.run_job("acme", timeout=30)
        assert job["state"] == "failed", job
        assert job["reason"] == "timed out (after 2 attempts)", job["reason"]
        assert job["files"]["pending"] == 1 and harness.uploads() == []
