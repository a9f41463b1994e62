"""Issue 10 item 1 and issue 12 item 5: a gateway that (re)starts next to another one's
uploads in flight leaves them alone, on S3 and on a shared WORKDIR, even while the other's
database commits are held up by a lock; and it still removes what is abandoned.

Before: the start-up clean-up aborted every unfinished multipart upload in the buckets,
removed every temporary file in a shared WORKDIR, and deleted a quarantine object whose
record was 5 s late: the first gateway then answered 202 for a payload that was gone."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from sqlalchemy import create_engine, text

from storage import new_object_key
from tests.e2e import Gateway
from tests.faults.tools import Result, upload
from tests.helpers import wait_for

MiB = 1024 * 1024


class Uploads:
    """Uploads running in threads; ``results()`` waits for them."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.done: list[Result] = []

    def start(self, port: int, size: int, **options: Any) -> None:
        def run() -> None:
            self.done.append(upload(port, os.urandom(size), timeout=120, **options))
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def results(self) -> list[Result]:
        for thread in self.threads:
            thread.join(120)
        return self.done


def cleanup_passed(gateway: Gateway) -> bool:
    log = gateway.log.read_text(errors="replace")
    # "clean-up pass" now; before the fix the start-up clean-up logged only what it removed
    return "clean-up pass" in log or "start-up cleanup removed" in log


@pytest.fixture
def s3_env(tmp_path: Path, moto_server: str, pg_url: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {"STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": moto_server, "DATABASE_URL": pg_url,
            "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}",
            "S3_REJECT": f"r-{suffix}", "URL_SIGNING_KEY": "neighbours"}


@pytest.fixture
def uploads_lock(pg_url: str) -> Iterator[Any]:
    """``lock()`` holds a lock on the uploads table (reads pass, inserts wait) until
    ``release()``: the first gateway's database commits are slow."""
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    conn = engine.connect()

    class Lock:
        def lock(self) -> None:
            conn.begin()
            conn.execute(text("LOCK TABLE uploads IN SHARE ROW EXCLUSIVE MODE"))

        def release(self) -> None:
            if conn.in_transaction():
                conn.commit()

    held = Lock()
    try:
        yield held
    finally:
        held.release()
        conn.close()
        engine.dispose()


def start(tmp_path: Path, name: str, env: dict[str, str]) -> Gateway:
    return Gateway({**env, "WORKDIR": str(tmp_path / name)}, ["gateway"]).start()


def object_sizes(s3: Any, bucket: str) -> dict[str, int]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: item["Size"] for item in listed}


def _object_key(gateway: Gateway, request_id: str) -> str:
    url = gateway.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT object_key FROM uploads WHERE request_id = :r"),
                                    {"r": request_id}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_restart_on_s3_leaves_a_neighbours_slow_commit_and_multipart_upload_alone(
        tmp_path: Path, s3_env: dict[str, str], moto_server: str, uploads_lock: Any) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server)
    quarantine = s3_env["S3_QUARANTINE"]
    first = start(tmp_path, "first", s3_env)
    second = None
    try:
        uploads_lock.lock()
        running = Uploads()
        running.start(first.port, 10_000)  # stored at once, its commit waits for the lock
        running.start(first.port, 9 * MiB, chunk=MiB, pause=0.6)  # a multipart upload
        assert wait_for(lambda: object_sizes(s3, quarantine) and s3.list_multipart_uploads(
            Bucket=quarantine).get("Uploads"), timeout=30)
        second = start(tmp_path, "second", s3_env)  # its start-up clean-up runs now
        assert wait_for(lambda: cleanup_passed(second), timeout=30)
        time.sleep(6.0)  # the old clean-up's 5 s grace
        uploads_lock.release()
        results = running.results()
        assert [r.status for r in results] == [202, 202], results
        sizes = object_sizes(s3, quarantine)
        for result in results:
            assert _object_key(first, result.request_id) in sizes, result
        assert sorted(sizes.values()) == [10_000, 9 * MiB]
    finally:
        uploads_lock.release()
        for gateway in (first, second):
            if gateway is not None:
                assert gateway.stop() == 0


@pytest.mark.timeout(180)
def test_restart_on_a_shared_workdir_leaves_a_neighbours_uploads_alone(tmp_path: Path) -> None:
    workdir = tmp_path / "shared"
    env = {"WORKDIR": str(workdir)}
    first = Gateway(env, ["gateway"]).start()
    second = None
    lock = sqlite3.connect(workdir / "gateway.sqlite", timeout=30)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the first gateway's commits wait behind it
        running = Uploads()
        running.start(first.port, 20_000)
        for _ in range(6):
            running.start(first.port, 3 * MiB, chunk=256 * 1024, pause=0.4)
        incomplete = workdir / "upload-quarantine" / ".incomplete"
        assert wait_for(lambda: len([p for p in incomplete.iterdir()
                                     if ".part-" in p.name]) >= 6, timeout=30)
        second = Gateway(env, ["gateway"]).start()
        assert wait_for(lambda: cleanup_passed(second), timeout=30)
        time.sleep(6.0)
        lock.rollback()
        results = running.results()
        assert sorted(r.status for r in results) == [202] * 7, results
        stored = {p.name: p.stat().st_size for p in (workdir / "upload-quarantine").iterdir()
                  if p.is_file()}
        assert sorted(stored.values()) == [20_000] + [3 * MiB] * 6
    finally:
        lock.close()
        for gateway in (first, second):
            if gateway is not None:
                assert gateway.stop() == 0


@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_a_commit_slower_than_the_deadline_fails_instead_of_racing_the_cleanup(
        tmp_path: Path, s3_env: dict[str, str], moto_server: str, uploads_lock: Any) -> None:
    """INGEST_DEADLINE 3 s; the commit is held 12 s. The upload's object is old enough to
    be removed while its record is still coming: the record must fail (503), never a 202
    for an object the clean-up removes."""
    s3 = boto3.client("s3", endpoint_url=moto_server)
    quarantine = s3_env["S3_QUARANTINE"]
    env = {**s3_env, "INGEST_DEADLINE": "3"}
    first = start(tmp_path, "first", env)
    second = None
    try:
        uploads_lock.lock()
        running = Uploads()
        running.start(first.port, 10_000)
        assert wait_for(lambda: object_sizes(s3, quarantine), timeout=30)
        time.sleep(6.0)  # older than INGEST_DEADLINE + slack
        second = start(tmp_path, "second", env)  # its clean-up waits behind the fence
        time.sleep(4.0)
        uploads_lock.release()
        [result] = running.results()
        assert result.status == 503, result
        assert wait_for(lambda: cleanup_passed(second), timeout=60)
        assert object_sizes(s3, quarantine) == {}
        # the gateways keep serving, and an upload in time is kept
        assert upload(first.port, b"later").status == 202
        assert len(object_sizes(s3, quarantine)) == 1
    finally:
        uploads_lock.release()
        for gateway in (first, second):
            if gateway is not None:
                assert gateway.stop() == 0


@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_what_is_abandoned_is_removed(tmp_path: Path, s3_env: dict[str, str],
                                      moto_server: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server)
    quarantine = s3_env["S3_QUARANTINE"]
    # long enough that the young object stays young while the second gateway starts
    env = {**s3_env, "INGEST_DEADLINE": "12"}
    first = start(tmp_path, "first", env)
    try:
        accepted = upload(first.port, b"kept")
        assert accepted.status == 202
    finally:
        assert first.stop() == 0
    orphan, unfinished = new_object_key(), new_object_key()
    s3.put_object(Bucket=quarantine, Key=orphan, Body=b"left by a crash")
    s3.create_multipart_upload(Bucket=quarantine, Key=unfinished)
    time.sleep(15.0)  # older than INGEST_DEADLINE + slack, like the accepted upload's
    young = new_object_key()
    s3.put_object(Bucket=quarantine, Key=young, Body=b"a neighbour's, just stored")
    second = start(tmp_path, "second", env)
    try:
        assert wait_for(lambda: cleanup_passed(second), timeout=30)
        assert set(object_sizes(s3, quarantine)) == {
            _object_key(second, accepted.request_id), young}
        assert s3.list_multipart_uploads(Bucket=quarantine).get("Uploads", []) == []
    finally:
        assert second.stop() == 0
