"""Issue 10 items 3 and 4, on real processes: a storage outage while validating (S3 cut
through the fault proxy in front of moto) and while applying a verdict (the perm
directory unwritable) delays payloads, never rejects them."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from bus import get_bus
from core.settings import Settings
from tests.e2e import ROOT, Gateway
from tests.faults.s3proxy import FaultProxy
from tests.faults.tools import upload
from tests.helpers import wait_for
from tests.validators.conftest import read


class Role:
    """``python app.py ROLE…`` without an HTTP port (a validator)."""

    def __init__(self, env: dict[str, str], role: list[str]) -> None:
        self.env = {**os.environ, **env}
        self.log = Path(env["WORKDIR"]) / f"{'-'.join(role)}-{uuid.uuid4().hex[:6]}.log"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *role], cwd=ROOT, env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(40)


def is_object(path: str) -> bool:
    return "/" in path.split("?", 1)[0].strip("/")


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    started = FaultProxy(moto_server).start()
    yield started
    started.stop()


@pytest.mark.s3
@pytest.mark.timeout(180)
def test_s3_cut_while_validating_delays_but_rejects_nothing(tmp_path: Path,
                                                            proxy: FaultProxy) -> None:
    """S3 answers nothing useful for 9 s (resets, 503 SlowDown, hangs), three times the
    old retry budget (3 attempts in ~3 s), while a validator fetches ten payloads; then it
    is back. Every payload is validated and available; no dead letter, no timeout."""
    suffix = uuid.uuid4().hex[:10]
    env = {"WORKDIR": str(tmp_path / "work"), "STORAGE_DRIVER": "s3",
           "S3_ENDPOINT_URL": proxy.url, "S3_QUARANTINE": f"q-{suffix}",
           "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}", "VALIDATION_TIMEOUT": "120"}
    gateway = Gateway(env, ["gateway"]).start()
    validator = None
    try:
        ids = [upload(gateway.port, os.urandom(3000 + n), n).request_id for n in range(10)]
        assert all(ids), ids
        faults = itertools.cycle(["reset", "503", "stall", "503"])
        proxy.stall_seconds = 1.0
        # every object request fails; the validator's start-up (bucket checks) goes through
        proxy.fault = lambda method, path: next(faults) if is_object(path) else None
        cut = time.monotonic()
        validator = Role(env, ["validator", "testareno"])
        assert wait_for(lambda: len(proxy.injected) >= 8, 30), "the validator never tried"
        time.sleep(max(0.0, cut + 9 - time.monotonic()))
        proxy.fault = lambda method, path: None
        for request_id in ids:
            assert wait_for(lambda: gateway.status(request_id)["status"] == "available",  # noqa: B023
                            60), \
                gateway.status(request_id)
        assert {m for m, _, _ in proxy.injected} == {"reset", "503", "stall"}
        assert all(gateway.status(r)["reason"] is None for r in ids)
        bus = get_bus(Settings.from_env(gateway.env))
        try:
            assert read(bus, "platform.upload.testareno.dlq", 1, timeout=1) == []
        finally:
            bus.close()
        assert "re-driven" not in validator.log.read_text()
    finally:
        proxy.fault = lambda method, path: None
        if validator is not None:
            assert validator.stop() == 0
        assert gateway.stop() == 0


def _chattr(flag: str, path: Path) -> bool:
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.timeout(180)
def test_perm_unwritable_while_applying_a_verdict_delays_but_rejects_nothing(
        tmp_path: Path) -> None:
    """Issue 10 item 4: the perm directory cannot be written (immutable: EPERM even for
    root) for longer than the old five attempts (~3 s) and than VALIDATION_TIMEOUT. The
    validator's success verdicts wait, the timelines say so, the timeout sweeper leaves
    them alone, and once the directory is writable again every payload is available.
    Before: the verdicts were given up after five attempts and the sweeper rejected the
    payloads (timeout)."""
    work = tmp_path / "work"
    perm = work / "upload-perm"
    gateway = Gateway({"WORKDIR": str(work), "VALIDATION_TIMEOUT": "4"}).start()
    try:
        perm.mkdir(parents=True, exist_ok=True)
        if not _chattr("+i", perm):
            pytest.skip("chattr +i is not supported on this file system")
        try:
            ids = []
            for n in range(3):
                code, answer = gateway.upload(os.urandom(1000 + n))
                assert code == 202, answer
                ids.append(answer["request_id"])

            def first_waits() -> bool:  # the first verdicts wait; the others queue behind
                return any(e["status"] == "waiting" for e in gateway.status(ids[0])["timeline"])
            assert wait_for(first_waits, timeout=60), [gateway.status(r) for r in ids]
            time.sleep(6)  # past VALIDATION_TIMEOUT and past the old retry budget
            assert {gateway.status(r)["status"] for r in ids} == {"announced"}, [
                gateway.status(r) for r in ids]
        finally:
            assert _chattr("-i", perm)
        assert wait_for(lambda: {gateway.status(r)["status"] for r in ids} == {"available"},
                        timeout=60), [gateway.status(r) for r in ids]
        waiting = [e for e in gateway.status(ids[0])["timeline"] if e["status"] == "waiting"]
        assert len(waiting) == 1 and "storage" in waiting[0]["message"], waiting
    finally:
        assert gateway.stop() == 0
