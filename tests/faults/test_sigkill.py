"""Issue 6, item 7: the gateway is killed (SIGKILL) while 100 uploads are in flight, then
restarted on the same port (signed URLs name it). Every upload that got a 202 reaches a
verdict; whatever did not get one leaves nothing in quarantine once the start-up cleanup
has run; no half-written object remains anywhere."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from core.settings import Settings
from tests.e2e import Gateway
from tests.faults.tools import bucket_files, run_concurrently, upload, uploads_table
from tests.helpers import free_port, wait_for

UPLOADS = 100
FINAL = ("available", "rejected")


@pytest.mark.timeout(180)
def test_sigkill_during_100_uploads_then_restart(tmp_path: Path) -> None:
    # what the kill leaves is removed once older than INGEST_DEADLINE (core/cleanup.py)
    env = {"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": str(free_port()),
           "INGEST_DEADLINE": "8"}
    settings = Settings.from_env(env)
    gateway = Gateway(env).start()
    payloads = {i: os.urandom(random.Random(i).randint(1, 600_000)) for i in range(UPLOADS)}
    accepted = threading.Semaphore(0)
    started = time.monotonic()

    def job(index: int):  # type: ignore[no-untyped-def]
        time.sleep(random.Random(index).uniform(0, 1.5))
        result = upload(gateway.port, payloads[index], index, request_id=f"kill-{index}",
                        timeout=20, chunk=32 * 1024, pause=0.01)
        if result.status == 202:
            accepted.release()
        return result

    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.extend(run_concurrently(UPLOADS, UPLOADS, job)))
    runner.start()
    for _ in range(30):  # kill once about a third have their 202
        assert accepted.acquire(timeout=30)
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    assert gateway.process.wait(10) == -signal.SIGKILL
    killed_after = time.monotonic() - started
    runner.join(60)
    got_202 = {r.request_id for r in outcome if r.status == 202}
    cut = [r for r in outcome if r.status != 202]
    assert all(r.status == 0 for r in cut), [r for r in cut if r.status][:3]
    print(f"\nSIGKILL after {killed_after:.1f}s: {len(got_202)} uploads got 202, "
          f"{len(cut)} were cut off or refused")
    assert 30 <= len(got_202) < UPLOADS

    restarted = Gateway(env).start()
    try:
        def decided() -> bool:
            rows = uploads_table(settings.workdir)
            return all(rows.get(rid, {}).get("status") in FINAL for rid in got_202)
        assert wait_for(decided, 60, interval=0.2), "an upload that got a 202 has no verdict"

        def clean() -> bool:
            rows = uploads_table(settings.workdir)
            quarantine, q_incomplete = bucket_files(settings.workdir, settings.s3_quarantine)
            leftovers = [p for b in settings.buckets.values()
                         for p in bucket_files(settings.workdir, b)[1]]
            pending = [r for r in rows.values() if r["status"] not in FINAL]
            return not quarantine and not leftovers and not pending
        # a clean-up pass every INGEST_DEADLINE removes what is older than it (+ 2 s)
        assert wait_for(clean, 30, interval=0.2), "quarantine or .incomplete not cleaned"

        rows = uploads_table(settings.workdir)
        assert got_202 <= set(rows)
        for rid, row in rows.items():
            assert row["status"] == "available", (rid, row["status"], row["reason"])
            index = int(rid.split("-")[1])
            path = settings.workdir / settings.s3_perm / row["object_key"]
            data = path.read_bytes()  # whole object in perm, nothing half-written
            assert len(data) == row["size"] == len(payloads[index])
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
        perm, _ = bucket_files(settings.workdir, settings.s3_perm)
        reject, _ = bucket_files(settings.workdir, settings.s3_reject)
        assert len(perm) == len(rows) and not reject
        print(f"recorded {len(rows)} uploads ({len(rows) - len(got_202)} recorded without "
              "a 202); all available, quarantine and .incomplete empty")
    finally:
        assert restarted.stop() == 0
