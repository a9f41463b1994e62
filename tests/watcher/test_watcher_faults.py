"""The watcher when files change under it or fail for a while: the ticker keeps taking
files (a file handed back does not put it to sleep for good, a file in backoff does not
hold up new ones)."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from core.ingest import PayloadWriter
from storage import StorageUnavailable
from tests.helpers import wait_for
from tests.watcher.harness import Harness, read_topics, watch_env
from watcher import service
from watcher.pipeline import watcher_request_id


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rewrite_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(data)


def test_a_file_changed_while_ingested_does_not_stop_the_ticker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The only file in flight ends "changed" (rewritten while it was ingested): it is taken
    again after a quiet period, and so are files dropped after it."""
    with Harness(watch_env(tmp_path)) as h:
        assert h.services is not None
        ingestor = h.services.ingestor
        real_finish, calls = ingestor.finish, []

        async def rewrite_first(writer: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(writer.payload.filename)
            if len(calls) == 1:
                await asyncio.sleep(0.5)  # a large file: the ticker has gone to sleep
                rewrite_in_place(h.root / "C7_Step1.obj", b"v 2 2 2\n")
            return await real_finish(writer, *args, **kwargs)

        monkeypatch.setattr(ingestor, "finish", rewrite_first)
        write(h.root / "C7_Step1.obj", b"v 1 1 1\n")
        assert wait_for(lambda: h.files(h.processed) == ["C7_Step1.obj"], 10), calls
        assert (h.processed / "C7_Step1.obj").read_bytes() == b"v 2 2 2\n"
        write(h.root / "C8_Step1.obj", b"v 8 8 8\n")
        assert wait_for(lambda: "C8_Step1.obj" in h.files(h.processed), 5)


def test_a_file_in_backoff_does_not_hold_up_new_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One file keeps failing (storage trouble for it alone) and waits out a long backoff;
    a new file is still taken after WATCH_QUIET_SECONDS, not when the backoff ends."""
    monkeypatch.setattr(service, "RETRY_DELAY", 30.0)
    with Harness(watch_env(tmp_path)) as h:
        assert h.services is not None and h.watcher is not None
        ingestor = h.services.ingestor
        real_finish, failed = ingestor.finish, []

        async def fail_stuck(writer: Any, *args: Any, **kwargs: Any) -> Any:
            if writer.payload.filename == "stuck.obj":
                failed.append(time.monotonic())
                raise StorageUnavailable("this one's bucket is unreachable")
            return await real_finish(writer, *args, **kwargs)

        monkeypatch.setattr(ingestor, "finish", fail_stuck)
        write(h.root / "stuck.obj", b"v 0 0 0\n")
        assert wait_for(lambda: failed and not h.watcher.busy, 10)  # type: ignore[union-attr]
        time.sleep(0.5)  # the ticker is asleep until the backoff ends
        dropped = time.monotonic()
        write(h.root / "fresh.obj", os.urandom(1000))
        assert wait_for(lambda: h.files(h.processed) == ["fresh.obj"], 10)
        assert time.monotonic() - dropped < 5, "the new file waited for the other's backoff"
        assert len(failed) == 1 and (h.root / "stuck.obj").exists()


def test_a_file_rewritten_during_its_copy_is_stored_hashed_and_announced_as_one_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large OBJ (read twice: hashed, then copied) rewritten in place, same size, while
    it is being copied: that attempt stores nothing (its object is removed, no event), and
    the file is taken again; the stored bytes, the request id, the sha256 and the asset
    events' sha1 all describe the version that was stored."""
    first, second = os.urandom(3 * 1024 * 1024), os.urandom(3 * 1024 * 1024)
    real_write, rewritten = PayloadWriter.write, []  # type: ignore[var-annotated]

    async def rewrite_during_copy(writer: PayloadWriter, data: bytes) -> None:
        await real_write(writer, data)
        if writer.payload.filename == "C9_Step1.obj" and not rewritten:
            rewritten.append(writer.size)
            rewrite_in_place(path, second)

    monkeypatch.setattr(PayloadWriter, "write", rewrite_during_copy)
    with Harness(watch_env(tmp_path)) as h:
        assert h.services is not None
        path = write(h.root / "C9_Step1.obj", first)
        assert wait_for(lambda: h.files(h.processed) == ["C9_Step1.obj"], 20)
        assert rewritten == [1024 * 1024], "the hook did not run during the copy"
        assert (h.processed / "C9_Step1.obj").read_bytes() == second
        sha256, sha1 = hashlib.sha256(second).hexdigest(), hashlib.sha1(second).hexdigest()  # noqa: S324
        [row] = h.uploads()
        assert row["sha256"] == sha256
        assert row["request_id"] == watcher_request_id("C9_Step1.obj", sha256)
        storage = h.services.storage
        assert list(storage.list_keys("quarantine")) == [row["object_key"]]
        with storage.open_reader("quarantine", row["object_key"]) as stored:
            assert gzip.decompress(stored.read()) == second
        found = read_topics(h.settings, ["platform.upload.assets", "platform.asset-transfer"],
                            lambda m: len(m) >= 3, 15)
        time.sleep(0.5)
        [announcement] = [m for m in found if m["topic"] == "platform.upload.assets"]
        assert announcement["request_id"] == row["request_id"]
        assert announcement["uncompressed"]["sha256"] == sha256  # the content (stored gzip)
        events = [m for m in found if m["topic"] == "platform.asset-transfer"]
        assert [(m["type"], m["request_id"], m["uncompressed_sha1_hash"]) for m in events] == [
            ("sdc_asset_transfer_file_created", row["request_id"], sha1),
            ("sdc_asset_transfer_file_uploaded", row["request_id"], sha1)]
