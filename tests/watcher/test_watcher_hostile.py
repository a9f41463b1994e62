"""The watcher cannot be turned against its host: links (to the URL-signing key, to
directories), FIFOs, sockets, devices and hard links dropped in WATCH_DIR are never read
and end in Failed/; names it cannot handle end there once, under a safe name; nothing of
them is stored or announced, and the watcher goes on."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client import REGISTRY

from storage import BUCKETS
from tests.helpers import wait_for
from tests.watcher.harness import Harness, read_topics, watch_env
from watcher import service
from watcher.files import MAX_NAME_BYTES

CATCH_ALL = "*.obj=assets/obj:gzip,*=testareno/lab"
TOPICS = ["platform.upload.assets", "platform.upload.testareno", "platform.asset-transfer"]
FORGED = "2030-01-01 00:00:00,000 INFO app admin signed in"


def hostile_env(tmp_path: Path) -> dict[str, str]:
    env = watch_env(tmp_path, WATCH_RULES=CATCH_ALL)
    del env["URL_SIGNING_KEY"]  # the key is made and kept in WORKDIR/url-signing.key
    return env


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def report(h: Harness, name: str) -> dict[str, Any]:
    return json.loads((h.failed / f"{name}.error.json").read_text())  # type: ignore[no-any-return]


def nothing_stored_or_announced(h: Harness) -> None:
    assert h.services is not None
    assert h.uploads() == []
    for bucket in BUCKETS:
        assert list(h.services.storage.list_keys(bucket)) == [], bucket
    assert read_topics(h.settings, TOPICS, lambda m: False, timeout=1.5) == []


@pytest.fixture
def held_fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO that a process (this one) holds open for writing."""
    path = tmp_path / "drop" / "held.obj"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    yield path
    os.close(fd)


def test_links_fifos_sockets_and_devices_end_in_failed_unread(
        tmp_path: Path, held_fifo: Path) -> None:
    env = hostile_env(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.obj").write_bytes(b"v 6 6 6\n")
    with Harness(env) as h:
        key = h.settings.workdir / "url-signing.key"
        assert key.is_file()
        hidden = h.root / ".private"
        hidden.mkdir()
        (hidden / "target.obj").write_bytes(b"v 1 1 1\n")
        made = {
            "key.txt": lambda p: p.symlink_to(key),
            "inside.obj": lambda p: p.symlink_to(hidden / "target.obj"),
            "relative.obj": lambda p: p.symlink_to(".private/target.obj"),
            "dangling.obj": lambda p: p.symlink_to(tmp_path / "nowhere"),
            "outside-dir": lambda p: p.symlink_to(outside, target_is_directory=True),
            "inside-dir": lambda p: p.symlink_to(".private", target_is_directory=True),
            "lab/pipe.obj": os.mkfifo,
            "lab/hard.obj": lambda p: os.link(outside / "secret.obj", p),
        }
        for name, make in made.items():
            (h.root / name).parent.mkdir(parents=True, exist_ok=True)
            make(h.root / name)
        sock = socket.socket(socket.AF_UNIX)
        assert len(str(h.root / "sock.obj")) < 100
        sock.bind(str(h.root / "sock.obj"))
        expected = [*made, "sock.obj", "held.obj"]
        if os.geteuid() == 0:
            os.mknod(h.root / "null.obj", 0o600 | 0o020000, os.makedev(1, 3))
            expected.append("null.obj")
        try:
            assert wait_for(lambda: all((h.failed / f"{n}.error.json").exists()
                                        for n in expected), 15), h.files(h.failed)
        finally:
            sock.close()
        for name in expected:
            found = report(h, name)
            assert found["error"] == "not_regular_file" and found["file"] == name, found
            assert os.path.lexists(h.failed / name) and not os.path.lexists(h.root / name)
        assert "symbolic link" in report(h, "key.txt")["message"]
        assert os.path.islink(h.failed / "key.txt") and os.path.islink(h.failed / "outside-dir")
        assert "FIFO" in report(h, "lab/pipe.obj")["message"]
        assert "FIFO" in report(h, "held.obj")["message"]
        assert "socket" in report(h, "sock.obj")["message"]
        assert "hard link" in report(h, "lab/hard.obj")["message"]
        nothing_stored_or_announced(h)
        (h.root / "lab" / "C1_Step1.obj").write_bytes(b"v 2 2 2\n")
        assert wait_for(lambda: h.files(h.processed) == ["lab/C1_Step1.obj"], 10)
        assert [r["filename"] for r in h.uploads()] == ["lab/C1_Step1.obj"]
    assert (outside / "secret.obj").read_bytes() == b"v 6 6 6\n"


def test_names_it_cannot_handle_end_in_failed_once_under_a_safe_name(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    env = hostile_env(tmp_path)
    root = Path(env["WATCH_DIR"])
    root.mkdir(parents=True)
    longest = "M" * (MAX_NAME_BYTES - 4) + ".obj"
    names = {
        b"bad\xff\xfe.obj": "bad%FF%FE.obj",
        b"sub\xc3/inner.obj": "sub%C3/inner.obj",
        f"x.obj\n{FORGED}.obj".encode(): f"x.obj%0A{FORGED}.obj",
        b"tab\tand\x1b[2J.obj": "tab%09and%1B[2J.obj",
        b"L" * 251 + b".obj": None,  # 255 bytes: shortened, see below
    }
    for raw in names:
        path = os.fsencode(root) + b"/" + raw
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"v 3 3 3\n")
    with Harness(env) as h:
        assert wait_for(lambda: len([n for n in h.files(h.failed) if n.endswith(".json")])
                        == len(names), 15), h.files(h.failed)
        (root / longest).write_bytes(b"v 4 4 4\n")  # fits, even with -2 in Processed/
        assert wait_for(lambda: h.files(h.processed) == [longest], 10)
        (root / longest).write_bytes(b"v 4 4 4\n")
        assert wait_for(lambda: len(h.files(h.processed)) == 2, 10)
        assert h.files(h.processed)[0] == "M" * (MAX_NAME_BYTES - 4) + "-2.obj"
        reports = [json.loads(p.read_text()) for p in h.failed.rglob("*.error.json")]
        by_original = {bytes.fromhex(r["original_hex"]): r for r in reports}
        assert set(by_original) == set(names)
        for raw, safe in names.items():
            found = by_original[raw]
            assert found["error"] == ("name_too_long" if safe is None else "bad_name"), found
            stored = found["stored_as"]
            assert safe is None or stored == safe
            assert (h.failed / stored).read_bytes() == b"v 3 3 3\n"
            assert found["file"] == raw.decode("utf-8", "backslashreplace")
        long_one = by_original[b"L" * 251 + b".obj"]["stored_as"]
        assert long_one.startswith("L" * 100) and long_one.endswith(".obj")
        assert len(long_one.encode()) <= MAX_NAME_BYTES
        assert [r["filename"] for r in h.uploads()] == [longest]
        failures = [r for r in caplog.records if "failed (" in r.getMessage()]
        assert len(failures) == len(names)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not [n for n in os.listdir(os.fsencode(root)) if n not in (b"Processed", b"Failed")
                    and os.path.isfile(os.fsencode(root) + b"/" + n)]


def test_what_cannot_even_be_moved_is_left_alone_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO whose place in Failed/ is a planted link (not followed, so the move fails):
    left where it is, logged once, not taken again by the rescans until it changes."""
    monkeypatch.setattr(service, "RESCAN_SECONDS", 0.3)
    caplog.set_level(logging.INFO)
    env = hostile_env(tmp_path)
    root = Path(env["WATCH_DIR"])
    (root / "Failed").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "Failed" / "lab").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "lab").mkdir()
    os.mkfifo(root / "lab" / "pipe.obj")
    with Harness(env) as h:
        def left_alone() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "nor moved" in r.getMessage()]

        assert wait_for(left_alone, 10)
        time.sleep(2)  # several rescans
        assert len(left_alone()) == 1 and "path=lab/pipe.obj" in left_alone()[0].getMessage()
        assert (root / "lab" / "pipe.obj").exists() and not os.listdir(tmp_path / "elsewhere")
        assert metric("gateway_watcher_files_total", outcome="ignored") >= 1
        nothing_stored_or_announced(h)
