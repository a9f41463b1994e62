"""The watcher with real directories and real inotify observers: files already there,
written slowly, renamed into place, dropped in bursts; duplicates, versions, restarts."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from prometheus_client import REGISTRY

from storage import StorageUnavailable
from tests.helpers import wait_for
from tests.watcher.conftest import PASSPHRASE, Keyring
from tests.watcher.harness import Harness, read_topics, watch_env
from watcher import files, service

TOPICS = ["platform.upload.assets", "platform.upload.testareno", "platform.asset-transfer"]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def messages(h: Harness, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    found = read_topics(h.settings, TOPICS, lambda m: len(m) >= count, timeout)
    assert len(found) >= count, found
    return found


def by_type(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in found if m.get("type") == f"sdc_asset_transfer_file_{kind}"]


def processed_is(h: Harness, count: int) -> Callable[[], bool]:
    return lambda: len(h.files(h.processed)) == count


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_files_already_there_are_ingested_with_asset_events(tmp_path: Path) -> None:
    env = watch_env(tmp_path)
    root = Path(env["WATCH_DIR"])
    mesh = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n" * 100
    write(root / "lab1" / "C1_Step1.obj", mesh)
    write(root / "C1_Step2.obj.gz", gzip.compress(mesh + b"# 2\n"))
    write(root / "C1_Step3.obj.part", b"still copying")
    write(root / ".hidden.obj", b"x")
    write(root / "unknown.bin", b"no rule for me")
    ingested = metric("gateway_watcher_files_total", outcome="ingested")
    with Harness(env) as h:
        assert wait_for(lambda: len(h.files(h.processed)) == 2 and h.files(h.failed), 15)
        assert h.files(h.processed) == ["C1_Step2.obj.gz", "lab1/C1_Step1.obj"]
        assert sorted(p.name for p in root.iterdir() if p.is_file()) == [".hidden.obj",
                                                                         "C1_Step3.obj.part"]
        report = json.loads((h.failed / "unknown.bin.error.json").read_text())
        assert report["error"] == "no_rule" and report["file"] == "unknown.bin"
        found = messages(h, 6)
        announcements = {m["filename"]: m for m in found if m["topic"] == "platform.upload.assets"}
        first = announcements["lab1/C1_Step1.obj"]
        assert announcements["C1_Step2.obj"]["metadata"]["steps"] == ["gunzip"]
        assert h.services is not None
        [row] = [r for r in h.uploads() if r["filename"] == "lab1/C1_Step1.obj"]
        with h.services.storage.open_reader("quarantine", row["object_key"]) as reader:
            stored = reader.read()
        assert gzip.decompress(stored) == mesh
        # size and checksums describe the bytes at the URL; the content's go in uncompressed
        assert first["compression"] == "gzip" and first["size"] == len(stored) < len(mesh)
        assert first["checksums"] == {"sha256": hashlib.sha256(stored).hexdigest()}
        assert first["uncompressed"] == {"size": len(mesh),
                                         "sha256": hashlib.sha256(mesh).hexdigest(),
                                         "sha1": hashlib.sha1(mesh).hexdigest()}  # noqa: S324
        assert "stored_size" not in first
        created, uploaded = by_type(found, "created"), by_type(found, "uploaded")
        assert {m["file_name"] for m in created} == {"C1_Step1.obj", "C1_Step2.obj"}
        sha1 = hashlib.sha1(mesh).hexdigest()  # noqa: S324
        assert {(m["file_name"], m["uncompressed_sha1_hash"]) for m in uploaded} >= {("C1_Step1.obj", sha1)}
        order = [m["type"] for m in found if m.get("request_id") == first["request_id"]
                 and m["topic"] == "platform.asset-transfer"]
        assert order == ["sdc_asset_transfer_file_created", "sdc_asset_transfer_file_uploaded"]
        database = h.services.database
        statuses = [e["status"] for e in database.timeline(first["request_id"])]
        assert statuses[:2] == ["received", "stored"]
        assert wait_for(lambda: "announced" in [e["status"] for e in
                                                database.timeline(first["request_id"])], 5)
    assert metric("gateway_watcher_files_total", outcome="ingested") - ingested == 2


def test_slow_writer_holding_the_file_open(tmp_path: Path) -> None:
    """Pauses longer than the quiet period, the file held open: not taken until closed."""
    with Harness(watch_env(tmp_path)) as h:
        path, chunks = h.root / "slow.obj", [os.urandom(50_000) for _ in range(4)]
        with open(path, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                handle.flush()
                time.sleep(0.5)
                assert not h.files(h.processed)
        assert wait_for(lambda: h.files(h.processed) == ["slow.obj"], 10)
        [row] = h.uploads()
        assert row["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_slow_copy_reopening_the_file(tmp_path: Path) -> None:
    """A writer that appends and closes again and again, faster than the quiet period."""
    with Harness(watch_env(tmp_path, WATCH_QUIET_SECONDS="0.5")) as h:
        path, data = h.root / "lab" / "append.obj", b""
        path.parent.mkdir()
        for _ in range(8):
            chunk = os.urandom(10_000)
            with open(path, "ab") as handle:
                handle.write(chunk)
            data += chunk
            time.sleep(0.2)
        assert wait_for(lambda: h.files(h.processed) == ["lab/append.obj"], 10)
        assert h.uploads()[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_renamed_into_place(tmp_path: Path) -> None:
    with Harness(watch_env(tmp_path)) as h:
        temp, data = h.root / "C2_Step1.obj.part", os.urandom(100_000)
        with open(temp, "wb") as handle:
            for start in range(0, len(data), 20_000):
                handle.write(data[start:start + 20_000])
                time.sleep(0.15)
        time.sleep(0.5)
        assert not h.files(h.processed) and not h.files(h.failed)
        os.rename(temp, h.root / "C2_Step1.obj")
        assert wait_for(lambda: h.files(h.processed) == ["C2_Step1.obj"], 10)
        assert [r["sha256"] for r in h.uploads()] == [hashlib.sha256(data).hexdigest()]


def test_burst_of_files(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "PROGRESS_SECONDS", 0.3)
    caplog.set_level(logging.INFO, logger="watcher.service")
    count = 500
    with Harness(watch_env(tmp_path)) as h:
        for i in range(count):
            write(h.root / f"batch{i % 7}" / f"C{i}_Step1.obj", b"v %d 0 0\n" % i * 1000)
        assert wait_for(lambda: len(h.files(h.processed)) == count, 40, interval=0.2)
        assert len({r["request_id"] for r in h.uploads()}) == count
        found = messages(h, 3 * count, timeout=30)
        assert len(by_type(found, "uploaded")) == count
        assert wait_for(lambda: h.watcher is not None and h.watcher.backlog() == 0, 5)
    assert any("backlog" in r.getMessage() and "files/s" in r.getMessage() for r in caplog.records)


def test_duplicates_and_new_versions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watcher.pipeline")
    with Harness(watch_env(tmp_path)) as h:
        drop = h.root / "lab" / "C3_Step1.obj"
        for content, expected in ((b"v 1 1 1\n", 1), (b"v 1 1 1\n", 2), (b"v 2 2 2\n", 3)):
            write(drop, content)
            assert wait_for(processed_is(h, expected), 10)
        assert h.files(h.processed) == ["lab/C3_Step1-2.obj", "lab/C3_Step1-3.obj",
                                        "lab/C3_Step1.obj"]
        assert len(h.uploads()) == 2
        assert any("duplicate" in r.getMessage() and "lab/C3_Step1.obj" in r.getMessage()
                   for r in caplog.records)
        found = messages(h, 6)
        assert len(by_type(found, "created")) == 2 and len(by_type(found, "uploaded")) == 2


def test_crash_between_storing_and_moving_then_restart(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The payload is stored and recorded, but the process never moves the file: the next
    process recognises it by its content and only moves it."""
    env = watch_env(tmp_path)
    write(Path(env["WATCH_DIR"]) / "C4_Step1.obj", b"v 4 4 4\n")
    real_move = files.move

    def crash(root: Path, relative: str, folder: str, *args: Any) -> str | None:
        if folder == "Processed":
            raise OSError("simulated crash before the move")
        return real_move(root, relative, folder, *args)

    monkeypatch.setattr(files, "move", crash)
    with Harness(env) as h:
        assert wait_for(lambda: len(h.uploads()) == 1, 10)
        time.sleep(0.3)
        assert not h.files(h.processed)
    monkeypatch.setattr(files, "move", real_move)
    with Harness(env) as h:
        assert wait_for(lambda: h.files(h.processed) == ["C4_Step1.obj"], 10)
        assert len(h.uploads()) == 1
        found = messages(h, 3)
        time.sleep(0.5)
        assert len([m for m in found if m["topic"] == "platform.upload.assets"]) == 1
        assert len(by_type(found, "uploaded")) == 1


def test_transient_storage_failure_leaves_the_file_and_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Harness(watch_env(tmp_path)) as h:
        assert h.services is not None
        ingestor = h.services.ingestor
        real_finish, calls = ingestor.finish, []

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise StorageUnavailable("disk full for a moment")
            return await real_finish(*args, **kwargs)

        monkeypatch.setattr(ingestor, "finish", flaky)
        write(h.root / "C5_Step1.obj", b"v 5 5 5\n")
        assert wait_for(lambda: len(calls) == 1, 10)
        assert (h.root / "C5_Step1.obj").exists() and not h.files(h.failed)
        assert wait_for(lambda: h.files(h.processed) == ["C5_Step1.obj"], 10)
        assert len(h.uploads()) == 1


def test_archives_and_bad_archives(tmp_path: Path) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("m1.txt", b"one"), ("sub/m2.txt", b"two")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with Harness(watch_env(tmp_path)) as h:
        write(h.root / "tars" / "good.tar.gz", buffer.getvalue())
        write(h.root / "tars" / "bad.tar.gz", b"not an archive at all")
        assert wait_for(lambda: h.files(h.processed) and h.files(h.failed), 10)
        assert h.files(h.processed) == ["tars/good.tar.gz"]
        assert sorted(r["filename"] for r in h.uploads()) == ["tars/good/m1.txt",
                                                              "tars/good/sub/m2.txt"]
        assert h.files(h.failed) == ["tars/bad.tar.gz", "tars/bad.tar.gz.error.json"]
        report = json.loads((h.failed / "tars" / "bad.tar.gz.error.json").read_text())
        assert report["error"] == "bad_archive" and report["message"]


def test_encrypted_files_and_the_wrong_key(tmp_path: Path, keyring: Keyring,
                                           other_keyring: Keyring) -> None:
    env = watch_env(tmp_path, GPG_HOME=str(keyring.home), GPG_PASSPHRASE=PASSPHRASE)
    root = Path(env["WATCH_DIR"])
    root.mkdir(parents=True)
    keyring.encrypt(gzip.compress(b"for the lab"), root / "ours.txt.gz.gpg")
    other_keyring.encrypt(b"not for us", root / "theirs.txt.gpg")
    with Harness(env) as h:
        assert wait_for(lambda: h.files(h.processed) and len(h.files(h.failed)) == 2, 15)
        assert h.files(h.processed) == ["ours.txt.gz.gpg"]
        [row] = h.uploads()
        assert row["filename"] == "ours.txt" and row["sha256"] == hashlib.sha256(b"for the lab").hexdigest()
        report = json.loads((h.failed / "theirs.txt.gpg.error.json").read_text())
        assert report["error"] == "decrypt_failed" and "secret key" in report["message"]


def test_large_file_gets_its_created_event_first_and_is_looked_up(tmp_path: Path) -> None:
    """Over one block: created, then uploaded, both recorded with the payload; dropped
    again, it is looked up first (not stored twice)."""
    with Harness(watch_env(tmp_path)) as h:
        data = os.urandom(1024 * 1024 + 4096)
        for expected in (1, 2):
            write(h.root / "big" / "C6_Step1.obj", data)
            assert wait_for(processed_is(h, expected), 15)
        assert len(h.uploads()) == 1
        found = messages(h, 3)
        events = [m["type"] for m in found if m["topic"] == "platform.asset-transfer"]
        assert events == ["sdc_asset_transfer_file_created", "sdc_asset_transfer_file_uploaded"]
        [created] = by_type(found, "created")
        assert created["uncompressed_sha1_hash"] == hashlib.sha1(data).hexdigest()  # noqa: S324
