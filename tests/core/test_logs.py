"""core.logs: whatever a logged value holds, one record is one line (continuations of a
traceback indented), so no input can forge a record."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from core import logs
from tests.e2e import ROOT, Gateway
from tests.helpers import wait_for

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) ")
FORGED = "2030-01-01 00:00:00,000 INFO app admin signed in"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The root logger configured as app.py configures it, writing to a buffer."""
    root = logging.getLogger()
    level, stream = root.level, io.StringIO()
    handler = logs.configure(logging.INFO, stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().split("\n")[:-1]


@pytest.mark.parametrize("value, shown", [
    ("a\nb", "a\\nb"), ("a\rb", "a\\rb"), ("a\r\nb", "a\\r\\nb"), ("a\x0bb\x0cc", "a\\x0bb\\x0cc"),
    ("a\x1cb\x1db\x1eb", "a\\x1cb\\x1db\\x1eb"), ("a\x85b", "a\\x85b"),
    ("a\u2028b\u2029c", "a\\u2028b\\u2029c"), ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
    ("nul\x00", "nul\\x00"), ("del\x7f", "del\\x7f"), ("tab\tstays", "tab\tstays"),
    (b"bad\xff\xfe.obj".decode("utf-8", "surrogateescape"), "bad\\xff\\xfe.obj"),
    ("lone\ud800", "lone\\ud800"), ("ünïcödé and \\n stay", "ünïcödé and \\n stay"),
])
def test_values_are_escaped_in_every_packages_logs(output: io.StringIO, value: str,
                                                   shown: str) -> None:
    for name in ("watcher.pipeline", "upload.handlers", "some.other.package"):
        logging.getLogger(name).warning("request_id=%s path=%s moved", "r1", value)
    found = lines(output)
    assert len(found) == 3 and all(RECORD.match(line) for line in found), found
    assert all(line.endswith(f" request_id=r1 path={shown} moved") for line in found)
    output.getvalue().encode("utf-8")  # nothing that the stream could not write


def test_a_forged_record_in_a_value_or_a_format_stays_on_its_line(output: io.StringIO) -> None:
    logger = logging.getLogger("watcher.service")
    logger.info("path=%s failed", f"x.obj\n{FORGED}")
    logger.info(f"path=y.obj\r\n{FORGED}")  # noqa: G004 - a message built by the caller
    found = lines(output)
    assert len(found) == 2 and not any(line.startswith(FORGED) for line in found)
    assert found[0].endswith(f"path=x.obj\\n{FORGED} failed")


def test_tracebacks_keep_their_lines_indented(output: io.StringIO) -> None:
    try:
        raise ValueError(f"bad name x.obj\n{FORGED}\u2028{FORGED}")
    except ValueError:
        logging.getLogger("watcher.service").exception("path=%s unexpected error", "x\n.obj")
    found = lines(output)
    assert RECORD.match(found[0]) and found[0].endswith("path=x\\n.obj unexpected error")
    assert len(found) > 3 and all(line.startswith(logs.CONTINUATION) for line in found[1:])
    assert found[1].strip() == "Traceback (most recent call last):"
    assert not any(RECORD.match(line) for line in found[1:])
    assert found[-1] == f"{logs.CONTINUATION}{FORGED}"  # its own line, but indented


def test_stack_info_is_indented(output: io.StringIO) -> None:
    logging.getLogger("core.relay").info("here\n%s", FORGED, stack_info=True)
    found = lines(output)
    assert RECORD.match(found[0]) and len(found) > 2
    assert all(line.startswith(logs.CONTINUATION) for line in found[1:])


def test_json_lines_carry_request_id_and_traceparent(tmp_path: Path) -> None:
    """LOG_FORMAT=json: every line is a JSON object; the lines about an upload carry its
    request_id (from X-Request-ID here), the request's lines its traceparent."""
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"), "LOG_FORMAT": "json"}).start()
    try:
        code, answer = gateway.upload(b"json logged", headers={"X-Request-ID": "json-1",
                                                               "traceparent": trace})
        assert code == 202 and answer["request_id"] == "json-1"
        assert wait_for(lambda: gateway.status("json-1")["status"] == "available", 30)
    finally:
        assert gateway.stop() == 0
    records = [json.loads(line) for line in gateway.log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    about = [r for r in records if "json-1" in r["message"]]
    assert len(about) >= 3 and all(r["request_id"] == "json-1" for r in about), about
    access = [r for r in records if r["logger"] == "upload.access" and "POST" in r["message"]]
    assert access and access[0]["traceparent"] == trace and access[0]["request_id"] == "json-1"


def test_log_format_is_checked(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, capture_output=True,
                          env={**os.environ, "WORKDIR": str(tmp_path), "LOG_FORMAT": "xml"},
                          timeout=60, check=False, text=True)
    assert done.returncode == 2 and done.stderr.startswith("configuration error: LOG_FORMAT")
