"""The shared validator loop on the embedded bus and on Kafka (mock cluster): bounded
concurrency, commits in order after the verdict, retries, dead letters, idempotence."""
from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
import threading
from typing import Any, BinaryIO

import pytest

from bus.kafka import KafkaBus
from bus.local import LocalBus
from core.settings import Settings
from tests.helpers import wait_for
from tests.validators.conftest import PayloadServer, announce, announcement, read
from validators.loop import ValidatorLoop, Verdict
from validators.pending import Pending

TOPIC, DLQ, VALIDATION = "platform.upload.svc", "platform.upload.svc.dlq", "platform.upload.validation"


@pytest.fixture
def bus(tmp_path):  # type: ignore[no-untyped-def]
    local = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    yield local
    local.close()


def committed(bus: LocalBus, group: str = "validator-svc") -> int:
    with sqlite3.connect(bus.path) as conn:
        row = conn.execute('SELECT committed_id FROM offsets WHERE "group" = ?', (group,)).fetchone()
    return int(row[0]) if row else 0


def last_offset(bus: LocalBus) -> int:
    with sqlite3.connect(bus.path) as conn:
        return int(conn.execute("SELECT max(id) FROM messages WHERE topic = ?", (TOPIC,)).fetchone()[0])


def test_pending_commits_only_the_finished_prefix() -> None:
    from bus import Message

    pending = Pending()
    messages = [Message(TOPIC, None, b"", 0, n) for n in (3, 7, 9)]
    assert all(pending.add(m) for m in messages)
    assert not pending.add(Message(TOPIC, None, b"", 0, 7))  # polled again while in flight
    pending.finish(messages[1])
    assert pending.committable() == []
    pending.finish(messages[0])
    assert pending.committable() == [messages[1]]
    pending.finish(messages[2])
    assert pending.committable() == [messages[2]] and pending.committable() == []


def test_pending_keeps_generations_apart() -> None:
    """A partition that came back is polled again from its committed offset: the new
    generation's queue commits on its own, and a message still in flight from the old one
    is not started twice but finishes both."""
    from bus import Message

    pending = Pending()
    old = [Message(TOPIC, None, b"", 0, n, generation=1) for n in (5, 6)]
    assert all(pending.add(m) for m in old)
    again = [Message(TOPIC, None, b"", 0, n, generation=2) for n in (5, 6, 7)]
    assert [pending.add(m) for m in again] == [False, False, True]
    pending.finish(again[2])
    assert pending.committable() == []  # 5 and 6 are still in flight
    pending.finish(old[0])
    pending.finish(old[1])
    assert sorted(pending.committable(), key=lambda m: m.generation) == [old[1], again[2]]
    assert pending.committable() == []


def test_bounded_concurrency_and_commit_after_the_oldest(bus: LocalBus, payloads: PayloadServer) -> None:
    data = b"payload"
    items = [announcement(f"r{n}", payloads.serve(f"/p{n}", data), data) for n in range(8)]
    running, peak, lock = [0], [0], threading.Lock()
    release_first, release_all = threading.Event(), threading.Event()

    def check(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        (release_first if ann["request_id"] == "r0" else release_all).wait(10)
        with lock:
            running[0] -= 1
        return Verdict("success")

    announce(bus, TOPIC, *items)
    loop = ValidatorLoop(bus, "svc", check, workers=3)
    loop.start()
    try:
        assert wait_for(lambda: running[0] == 3, 10)
        release_all.set()
        # r0 still runs: everything else is answered, nothing is committed past it
        assert len(read(bus, VALIDATION, 7)) == 7
        assert committed(bus) == 0
        release_first.set()
        assert wait_for(lambda: committed(bus) == last_offset(bus), 10)
    finally:
        loop.stop()
    assert peak[0] == 3
    assert sorted(v["request_id"] for v in read(bus, VALIDATION, 8)) == [f"r{n}" for n in range(8)]


def test_retries_then_dead_letters_without_a_verdict(bus: LocalBus, payloads: PayloadServer) -> None:
    data = b"x"
    calls: list[str] = []

    def check(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
        calls.append(ann["request_id"])
        if ann["request_id"] == "poison":
            raise RuntimeError("checker crashed")
        return Verdict("success")

    poison = announcement("poison", payloads.serve("/poison", data), data)
    flaky = announcement("flaky", payloads.serve("/flaky", data, 503), data)  # one 503 first
    announce(bus, TOPIC, poison, b"\x00not json", {"request_id": "no-url"}, flaky)
    loop = ValidatorLoop(bus, "svc", check, workers=2, max_attempts=3, retry_delay=0.01)
    loop.start()
    try:
        letters = read(bus, DLQ, 3)
        assert wait_for(lambda: committed(bus) == last_offset(bus), 10)
    finally:
        loop.stop()
    by_id = {letter.get("request_id", "raw"): letter for letter in letters}
    assert by_id["poison"]["attempts"] == 3 and "checker crashed" in by_id["poison"]["error"]
    assert by_id["poison"]["url"] == poison["url"] and by_id["poison"]["failed_at"]
    assert by_id["raw"]["attempts"] == 1 and by_id["raw"]["raw"].endswith("not json")
    assert by_id["no-url"]["attempts"] == 1 and "malformed" in by_id["no-url"]["error"]
    assert calls.count("poison") == 3 and payloads.hits["/flaky"] == 2
    verdicts = read(bus, VALIDATION, 2, timeout=1.0)
    assert [v["request_id"] for v in verdicts] == ["flaky"]  # the dead letters got none


def test_refused_fetch_mismatch_and_repeats(bus: LocalBus, payloads: PayloadServer) -> None:
    data = b"hello"
    checked: list[str] = []

    def check(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
        checked.append(ann["request_id"])
        assert payload.read() == data
        return Verdict("success", extra={"id": "v-1"})

    ok = announcement("ok", payloads.serve("/ok", data), data)
    gone = announcement("gone", payloads.serve("/gone", b"", 403), data)
    bad = announcement("bad", payloads.serve("/bad", b"tampered"), data)
    stored = gzip.compress(data)
    zipped = announcement("gz", payloads.serve("/gz", stored), data, compression="gzip")
    zipped["checksums"] = {"sha256": hashlib.sha256(stored).hexdigest()}  # the URL's bytes
    zipped["size"] = len(stored)
    zipped["uncompressed"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    announce(bus, TOPIC, ok, gone, bad, zipped, ok)  # "ok" announced twice
    loop = ValidatorLoop(bus, "svc", check, workers=1)
    loop.start()
    try:
        verdicts = read(bus, VALIDATION, 5)
    finally:
        loop.stop()
    got = [(v["request_id"], v["validation"], v.get("reason", "")) for v in verdicts]
    assert got[0] == ("ok", "success", "") and verdicts[0]["id"] == "v-1"
    assert got[1][:2] == ("gone", "failure") and "HTTP 403" in got[1][2]
    assert got[2][:2] == ("bad", "failure") and "checksum mismatch" in got[2][2]
    assert got[3] == ("gz", "success", "")
    assert got[4] == ("ok", "success", "")
    assert checked == ["ok", "gz"] and payloads.hits["/ok"] == 1  # the repeat was not refetched


@pytest.mark.kafka
def test_kafka_workers_verdicts_and_dead_letter(kafka_settings: Settings, kafka_topics,  # type: ignore[no-untyped-def]
                                                payloads: PayloadServer) -> None:
    kafka_topics([TOPIC, DLQ, VALIDATION])
    bus = KafkaBus(kafka_settings, session_timeout=1.0)
    data = b"k"
    items = [announcement(f"k{n}", payloads.serve(f"/k{n}", data), data) for n in range(6)]
    items.append(announcement("kpoison", payloads.serve("/kpoison", data), data))
    barrier = threading.Barrier(2, timeout=10)

    def check(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
        if ann["request_id"] == "kpoison":
            raise ValueError("unreadable")
        if ann["request_id"] in ("k0", "k1"):
            barrier.wait()  # only passes if two checks run at once
        return Verdict("failure" if ann["request_id"] == "k5" else "success", "k5 is bad"
                       if ann["request_id"] == "k5" else None)

    announce(bus, TOPIC, *items)
    group = f"validator-svc-{id(items)}"
    loop = ValidatorLoop(bus, "svc", check, group=group, workers=2, retry_delay=0.01)
    loop.start()
    try:
        [letter] = read(bus, DLQ, 1, timeout=30, where=lambda m: m["request_id"] == "kpoison")
        verdicts = read(bus, VALIDATION, 6, timeout=30,
                        where=lambda m: m["request_id"].startswith("k"))
    finally:
        loop.stop()
    assert letter["request_id"] == "kpoison" and letter["attempts"] == 3
    assert {v["request_id"]: v["validation"] for v in verdicts} == {
        **{f"k{n}": "success" for n in range(5)}, "k5": "failure"}
    # everything was committed: a new member of the group gets nothing
    assert read(bus, TOPIC, 1, timeout=3.0, group=group) == []
    bus.close()


def test_fetch_refuses_non_http_schemes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    import pytest

    from validators.loop import FetchRefused, fetch

    secret = tmp_path / "secret"
    secret.write_text("do not read")
    for url in (f"file://{secret}", "ftp://127.0.0.1/x", "data:,hello"):
        with pytest.raises(FetchRefused):
            fetch(url, io.BytesIO())


def test_small_payloads_are_checked_without_creating_files(  # type: ignore[no-untyped-def]
        bus: LocalBus, payloads: PayloadServer, tmp_path, monkeypatch) -> None:
    """Up to SPOOL_BYTES the payload is held in memory, beyond that in an unnamed file; no
    directory or named file per payload (each one deleted made every later file creation on
    a journal-less ext4 scan it: bench/README.md, issue 14). A check with ``needs_path``
    still gets a real file in a private directory."""
    import tempfile

    import validators.loop as loop_module
    from validators.loop import chain

    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    created: list[str] = []
    real_open = open

    def watching_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str) and any(c in mode for c in "wax+"):
            created.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(loop_module, "open", watching_open, raising=False)
    seen: dict[str, tuple[bytes, list[str], str | None]] = {}

    def check(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
        name = getattr(payload, "name", None)
        seen[ann["request_id"]] = (payload.read(), sorted(p.name for p in spool.iterdir()),
                                   name if isinstance(name, str) else None)
        return Verdict("success")

    spool_bytes = getattr(loop_module, "SPOOL_BYTES", 1024 * 1024)
    small, large = b"x" * 1000, bytes(range(256)) * (spool_bytes // 256 + 1)
    stored = gzip.compress(small)
    zipped = announcement("gz", payloads.serve("/gz", stored), small, compression="gzip")
    zipped["checksums"] = {"sha256": hashlib.sha256(stored).hexdigest()}
    zipped["uncompressed"] = {"size": len(small), "sha256": hashlib.sha256(small).hexdigest()}
    announce(bus, TOPIC, announcement("small", payloads.serve("/small", small), small), zipped,
             announcement("large", payloads.serve("/large", large), large))
    loop = ValidatorLoop(bus, "svc", check, workers=1)
    loop.start()
    try:
        assert [v["validation"] for v in read(bus, VALIDATION, 3)] == ["success"] * 3
    finally:
        loop.stop()
    assert seen["small"] == (small, [], None)
    assert seen["gz"] == (small, [], None)
    assert seen["large"][0] == large and seen["large"][1] == []  # unnamed: nothing listed
    assert created == [] and list(spool.iterdir()) == []

    beside: dict[str, list[str]] = {}

    def by_path(ann: dict[str, Any], payload: BinaryIO) -> Verdict:
        with real_open(payload.name, "rb") as again:
            seen[ann["request_id"]] = (again.read(), [p.name for p in spool.iterdir()],
                                       payload.name)
        beside[ann["request_id"]] = sorted(os.listdir(os.path.dirname(payload.name)))
        return Verdict("success")

    by_path.needs_path = True  # type: ignore[attr-defined]
    zipped_path = {**zipped, "request_id": "gz-path", "url": payloads.serve("/gz-path", stored)}
    announce(bus, TOPIC, announcement("path", payloads.serve("/path", small), small), zipped_path)
    loop = ValidatorLoop(bus, "svc", chain([check, by_path]), workers=1)
    loop.start()
    try:
        assert [v["request_id"] for v in read(bus, VALIDATION, 5)[3:]] == ["path", "gz-path"]
    finally:
        loop.stop()
    for name in ("path", "gz-path"):
        content, listed, path = seen[name]
        assert content == small and len(listed) == 1 and path is not None
        assert path.startswith(str(spool / listed[0]))
        assert beside[name] == ["payload"]  # inflated: the compressed file is not left
    assert list(spool.iterdir()) == []
