"""Issue 10 item 3: an outage of the payload storage is retried for as long as the payload
has time left, apart from poison; dead letters are re-driven by ``app.py redrive``."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from bus import OutMessage
from bus.local import LocalBus
from core import metrics
from core.settings import Settings
from tests.helpers import wait_for
from tests.validators.conftest import PayloadServer, announce, announcement, read
from tests.validators.test_loop import DLQ, TOPIC, VALIDATION, committed, last_offset
from validators.loop import ValidatorLoop, Verdict
from validators.redrive import redrive

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bus(tmp_path):  # type: ignore[no-untyped-def]
    local = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    yield local
    local.close()


def ok(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
    return Verdict("success")


def test_outage_outlasting_the_attempts_is_retried_not_dead_lettered(
        bus: LocalBus, payloads: PayloadServer) -> None:
    """Seven 503/429/500 answers in a row (more than the 3 attempts poison gets), then
    the payload: validated, nothing dead-lettered."""
    data = b"good payload"
    url = payloads.serve("/p", data, 503, 429, 500, 503, 503, 502, 503)
    refused = payloads.serve("/gone", b"", 404)
    announce(bus, TOPIC, announcement("slow", url, data), announcement("gone", refused, data))
    loop = ValidatorLoop(bus, "svc", ok, workers=2, max_attempts=3, retry_delay=0.01)
    loop.start()
    try:
        verdicts = read(bus, VALIDATION, 2)
        assert wait_for(lambda: committed(bus) == last_offset(bus), 10)
    finally:
        loop.stop()
    got = {v["request_id"]: v["validation"] for v in verdicts}
    assert got == {"slow": "success", "gone": "failure"}  # a 404 is the content's fault
    assert payloads.hits["/p"] == 8 and payloads.hits["/gone"] == 1
    assert read(bus, DLQ, 1, timeout=0.5) == []


def test_outage_past_the_validation_timeout_gives_up_without_a_dead_letter(
        bus: LocalBus, payloads: PayloadServer) -> None:
    data = b"x"
    url = payloads.serve("/down", data, *([503] * 1000))
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=59)).isoformat()
    announce(bus, TOPIC, announcement("late", url, data, timestamp=stamp))
    expired = metrics.VALIDATOR_EXPIRED.labels("svc")._value.get()
    loop = ValidatorLoop(bus, "svc", ok, retry_delay=0.05, validation_timeout=60)
    loop.start()
    try:
        assert wait_for(lambda: committed(bus) == last_offset(bus), 15)
    finally:
        loop.stop()
    assert 3 <= payloads.hits["/down"] < 100  # retried for its last second, then given up
    assert metrics.VALIDATOR_EXPIRED.labels("svc")._value.get() == expired + 1
    assert read(bus, DLQ, 1, timeout=0.5) == [] and read(bus, VALIDATION, 1, timeout=0.5) == []


def test_redrive_moves_dead_letters_back_once(bus: LocalBus, payloads: PayloadServer) -> None:
    data = b"fixed"
    good = announcement("r1", payloads.serve("/r1", data), data)
    letters = [
        {**good, "error": "RuntimeError: checker crashed", "attempts": 3, "failed_at": "t"},
        {"raw": "not json", "error": "malformed announcement: not JSON", "attempts": 1},
        {**announcement("r2", payloads.serve("/r2", data), data), "error": "x", "attempts": 3},
    ]
    announce(bus, DLQ, *letters)
    first = redrive(bus, "svc", idle=1.0)
    assert (first.moved, first.passed_over, first.failed) == (2, 1, None)
    moved = read(bus, TOPIC, 2)
    assert moved[0] == good and [m["request_id"] for m in moved] == ["r1", "r2"]
    assert "error" not in moved[1] and "attempts" not in moved[1]
    again = redrive(bus, "svc", idle=0.5)  # idempotent: nothing new
    assert (again.moved, again.passed_over) == (0, 0)
    # what the validators make of it: verdicts, no new dead letters
    loop = ValidatorLoop(bus, "svc", ok, group="validator-svc-redriven")
    loop.start()
    try:
        verdicts = read(bus, VALIDATION, 2)
    finally:
        loop.stop()
    assert sorted(v["request_id"] for v in verdicts) == ["r1", "r2"]


def test_redrive_command(tmp_path: Path) -> None:
    """``python app.py redrive SERVICE``: logs each letter, prints the summary, exits 0;
    an unknown service is a configuration error (2)."""
    env = {"WORKDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    settings = Settings.from_env(env)
    local = LocalBus(settings)
    producer = local.producer()
    letter = {"request_id": "cli-1", "url": "http://127.0.0.1:9/x", "error": "boom",
              "attempts": 3}
    assert producer.send([OutMessage("platform.upload.testareno.dlq", "cli-1",
                                     json.dumps(letter).encode())], 10) == [True]
    producer.close()
    command = [sys.executable, str(ROOT / "app.py"), "redrive", "testareno", "--idle", "1"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "redrive testareno: 1 moved, 0 passed over" in done.stdout
    assert "request_id=cli-1 re-driven from platform.upload.testareno.dlq" in done.stderr
    [moved] = read(local, "platform.upload.testareno", 1)
    assert moved == {"request_id": "cli-1", "url": "http://127.0.0.1:9/x"}
    done = subprocess.run([*command[:3], "nosuch"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "no service 'nosuch'" in done.stderr
    local.close()
