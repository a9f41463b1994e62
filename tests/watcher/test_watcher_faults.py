"""The watcher when files change under it or fail for a while: the ticker keeps taking
files (a file handed back does not put it to sleep for good, a file in backoff does not
hold up new ones)."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from storage import StorageUnavailable
from tests.helpers import wait_for
from tests.watcher.harness import Harness, watch_env
from watcher import service


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
