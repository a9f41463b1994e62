"""Command validators with real subprocesses: exit codes, output tails, a clean
environment, timeouts that kill the whole process group, and their settings."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from bus.local import LocalBus
from core.settings import Settings, SettingsError
from tests.helpers import wait_for
from tests.validators.conftest import PayloadServer, announce, announcement, read
from validators import build_loops, preflight
from validators.command import CommandCheck
from validators.config import validator_config


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run(check: CommandCheck, tmp_path: Path, data: bytes = b"payload", **fields: str):  # type: ignore[no-untyped-def]
    workdir = tmp_path / f"work-{time.monotonic_ns()}"
    workdir.mkdir()
    (workdir / "payload").write_bytes(data)
    ann = {"request_id": "req-1", "service": "advisor", "category": "c",
           "content_type": "application/vnd.redhat.advisor.c+tgz", "size": len(data),
           "checksums": {"sha256": "abc"}, "metadata": {"k": "v"}, **fields}
    with open(workdir / "payload", "rb") as payload:
        return check(ann, payload)


def test_exit_zero_is_success_with_a_clean_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    path = script(tmp_path, "ok.sh", 'cat "$2" >/dev/null && env | sort && pwd\n')
    verdict = run(CommandCheck((path, "--strict")), tmp_path)
    assert verdict.validation == "success" and verdict.reason is None
    details = verdict.extra["command"]  # type: ignore[index]
    assert details["exit_code"] == 0 and details["duration_seconds"] >= 0
    out = details["stdout_tail"]
    assert "SECRET_TOKEN" not in out and "LANG=C.UTF-8" in out
    assert "UPLOAD_REQUEST_ID=req-1" in out and "UPLOAD_SERVICE=advisor" in out
    assert 'UPLOAD_METADATA={"k": "v"}' in out and "UPLOAD_TIMEOUT=300" in out
    home = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("HOME="))
    assert out.rstrip().endswith(home) and f"UPLOAD_PATH={home}/payload" in out


def test_non_zero_exit_is_failure_with_the_output(tmp_path: Path) -> None:
    path = script(tmp_path, "bad.sh", 'echo "checking"; echo "line 3: bad header" >&2; exit 3\n')
    verdict = run(CommandCheck((path,)), tmp_path)
    assert verdict.validation == "failure" and verdict.reason == "line 3: bad header"
    assert verdict.extra["command"]["exit_code"] == 3  # type: ignore[index]
    assert verdict.extra["command"]["stdout_tail"] == "checking\n"  # type: ignore[index]
    quiet = script(tmp_path, "quiet.sh", "exit 4\n")
    assert run(CommandCheck((quiet,)), tmp_path).reason == "exit code 4"
    long = script(tmp_path, "long.sh", "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1\n")
    assert len(run(CommandCheck((long,)), tmp_path).reason or "") == 2048


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = script(tmp_path, "slow.sh", f"sleep 30 & echo $! > {pidfile}\nsleep 30\n")
    started = time.monotonic()
    verdict = run(CommandCheck((path,), timeout=0.5), tmp_path)
    assert time.monotonic() - started < 5
    assert verdict.validation == "failure" and verdict.reason == "timed_out"
    child = int(pidfile.read_text())

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False
    assert wait_for(gone, 5)


def test_missing_command(tmp_path: Path) -> None:
    check = CommandCheck((str(tmp_path / "nope"),))
    with pytest.raises(FileNotFoundError):
        check.verify()
    with pytest.raises(FileNotFoundError):
        run(check, tmp_path)


def test_settings(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path), "VALIDATOR_COMMAND_ADVISOR": "/usr/bin/check --name 'a b'",
           "VALIDATOR_TIMEOUT_ADVISOR": "2.5", "VALIDATORS": "advisor:archive+mime"}
    settings = Settings.from_env(env)
    config = validator_config(settings)  # the validators read their own variables
    assert config.commands == {"advisor": ("/usr/bin/check", "--name", "a b")}
    assert config.timeouts["advisor"] == 2.5
    assert config.checks == {"advisor": ("archive", "mime")}
    for bad in ({"VALIDATOR_COMMAND_NOPE": "x"}, {"VALIDATOR_COMMAND_ADVISOR": "'open"},
                {"VALIDATOR_TIMEOUT_ADVISOR": "0"}, {"VALIDATORS": "advisor:nope"},
                {"VALIDATORS": "nope:test"}, {"VALIDATOR_MAX_ATTEMPTS": "0"}):
        with pytest.raises(SettingsError):
            validator_config(Settings.from_env({"WORKDIR": str(tmp_path), **bad}))
    with pytest.raises(FileNotFoundError):
        preflight(settings, "advisor")  # /usr/bin/check is not installed


def test_command_through_the_loop(tmp_path: Path, payloads: PayloadServer) -> None:
    path = script(tmp_path, "grep.sh",
                  'if grep -q bad "$UPLOAD_PATH"; then echo "found bad" >&2; exit 2; fi\n')
    settings = Settings.from_env({"WORKDIR": str(tmp_path), "VALIDATOR_COMMAND_ADVISOR": path,
                                  "VALIDATORS": "testareno:test"})
    bus = LocalBus(settings)
    [loop] = build_loops(settings, bus, "advisor")
    good, bad = b"all good", b"this is bad"
    announce(bus, "platform.upload.advisor",
             announcement("good", payloads.serve("/good", good), good, "advisor"),
             announcement("bad", payloads.serve("/bad", bad), bad, "advisor"))
    loop.start()
    try:
        verdicts = read(bus, "platform.upload.validation", 2)
    finally:
        loop.stop()
        bus.close()
    verdicts.sort(key=lambda v: v["request_id"] != "good")  # workers answer in any order
    assert [(v["request_id"], v["validation"], v.get("reason")) for v in verdicts] == [
        ("good", "success", None), ("bad", "failure", "found bad")]
    assert verdicts[1]["command"]["exit_code"] == 2
