"""LocalDiskStorage: the storage contract, plus key confinement and disk failures."""
from __future__ import annotations

import errno
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from core.settings import Settings
from core.signing import DOWNLOAD_PREFIX, verify_download
from storage import RESUMABLE_PREFIX, Storage, StorageUnavailable, get_storage, localdisk_writeback
from storage.localdisk import LocalDiskStorage
from tests.contracts.resumable_contract import ResumableContract, append
from tests.contracts.storage_contract import StorageContract, new_key, put

SIGNING_KEY = "localdisk-test-key"


class DownloadHandler(BaseHTTPRequestHandler):
    """Serves signed downloads the way the gateway does: verify, then stream."""

    server: DownloadServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        bucket, _, key = url.path[len(DOWNLOAD_PREFIX) + 1 :].partition("/")
        bucket, key = unquote(bucket), unquote(key)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        storage = self.server.storage
        if storage is None or not verify_download(
            SIGNING_KEY.encode(), bucket, key, query.get("expires", ""), query.get("signature", "")
        ):
            self.send_error(403)
            return
        try:
            reader = storage.open_reader(bucket, key)
        except FileNotFoundError:
            self.send_error(404)
            return
        with reader:
            self.send_response(200)
            self.send_header("Content-Length", str(storage.size(bucket, key)))
            self.end_headers()
            while chunk := reader.read(65536):
                self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:
        pass


class DownloadServer(ThreadingHTTPServer):
    daemon_threads = True
    storage: Storage | None = None


@pytest.fixture(scope="module")
def download_server() -> Iterator[DownloadServer]:
    server = DownloadServer(("127.0.0.1", 0), DownloadHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def make_settings(workdir: Path, port: int = 8888) -> Settings:
    return Settings.from_env(
        {
            "WORKDIR": str(workdir),
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "URL_SIGNING_KEY": SIGNING_KEY,
        }
    )


@pytest.fixture
def storage(tmp_path: Path, download_server: DownloadServer) -> Iterator[LocalDiskStorage]:
    port = download_server.server_address[1]
    driver = LocalDiskStorage(make_settings(tmp_path, port))
    download_server.storage = driver
    yield driver
    download_server.storage = None


class TestLocalDiskContract(StorageContract, ResumableContract):
    pass


def test_get_storage_builds_localdisk(tmp_path: Path) -> None:
    assert isinstance(get_storage(make_settings(tmp_path)), LocalDiskStorage)


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "/etc/passwd", "a\x00b", "", "a//b", "./a", "a/."]
    + [".incomplete/x", ".."],
)
def test_bad_keys_are_rejected(storage: LocalDiskStorage, key: str) -> None:
    for call in (
        lambda: storage.open_writer("quarantine", key),
        lambda: storage.open_reader("quarantine", key),
        lambda: storage.exists("quarantine", key),
        lambda: storage.delete("quarantine", key),
        lambda: storage.move("quarantine", "perm", key),
        lambda: storage.signed_url("perm", key, 60),
    ):
        with pytest.raises(ValueError):
            call()


def test_symlink_cannot_lead_outside(storage: LocalDiskStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "upload-quarantine" / "link")
    with pytest.raises(ValueError):
        storage.open_writer("quarantine", "link/file")


def test_unknown_bucket(storage: LocalDiskStorage) -> None:
    with pytest.raises(ValueError):
        storage.open_writer("elsewhere", "key")


def test_layout_and_temporary_file(storage: LocalDiskStorage, tmp_path: Path) -> None:
    key = new_key()
    incomplete = tmp_path / "upload-quarantine" / ".incomplete"
    writer = storage.open_writer("quarantine", key)
    writer.write(b"partial")
    [temp] = list(incomplete.iterdir())
    assert ".part-" in temp.name
    writer.commit()
    assert list(incomplete.iterdir()) == []
    assert (tmp_path / "upload-quarantine" / key).read_bytes() == b"partial"


def test_commit_syncs_once(storage: LocalDiskStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync",
                        lambda fd: (calls.append(fd), real_fsync(fd))[1])  # type: ignore[func-returns-value]
    writer = storage.open_writer("quarantine", new_key())
    for _ in range(64):
        writer.write(b"x" * 100_000)
    assert calls == []
    writer.commit()
    assert len(calls) == 2  # the file, then its directory


class DiskSpy:
    """Records the write-behind's ``sync_file_range`` and ``posix_fadvise`` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, window: int) -> None:
        real_sync = localdisk_writeback.sync_file_range
        if real_sync is None or not hasattr(os, "posix_fadvise"):
            pytest.skip("no sync_file_range or posix_fadvise on this platform")
        real_fadvise = os.posix_fadvise
        self.synced: list[tuple[int, int, int]] = []
        self.dropped: list[tuple[int, int]] = []

        def sync(fd: int, offset: int, length: int, flags: int) -> int:
            self.synced.append((offset, length, flags))
            return real_sync(fd, offset, length, flags)

        def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
            if advice == os.POSIX_FADV_DONTNEED:
                self.dropped.append((offset, length))
            real_fadvise(fd, offset, length, advice)

        monkeypatch.setattr(localdisk_writeback, "sync_file_range", sync)
        monkeypatch.setattr(os, "posix_fadvise", fadvise)
        monkeypatch.setattr(localdisk_writeback, "WRITE_BEHIND", window)


def test_write_behind_hands_ranges_to_the_disk(
    storage: LocalDiskStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every WRITE_BEHIND bytes the written range is handed to the kernel, what was
    handed a window before is waited for and dropped from the page cache, and the rest is
    dropped after the fsync; the object is still exactly what was written."""
    spy = DiskSpy(monkeypatch, 3_000_000)
    key = new_key()
    pieces = [bytes([n]) * 1_300_000 for n in range(8)]
    writer = storage.open_writer("quarantine", key)
    for piece in pieces:
        writer.write(piece)
    writer.commit()
    write, wait = 2, 7
    assert spy.synced == [(0, 3_900_000, write), (3_900_000, 3_900_000, write),
                          (0, 900_000, wait)]
    assert spy.dropped == [(0, 900_000), (900_000, 9_500_000)]
    with storage.open_reader("quarantine", key) as reader:
        assert reader.read() == b"".join(pieces)


def test_small_objects_stay_in_the_page_cache(
    storage: LocalDiskStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under WRITE_BEHIND bytes nothing is handed early nor dropped (a validator reads a
    small payload soon after)."""
    spy = DiskSpy(monkeypatch, 3_000_000)
    writer = storage.open_writer("quarantine", new_key())
    writer.write(b"x" * 2_999_999)
    writer.commit()
    assert (spy.synced, spy.dropped) == ([], [])


def test_resumable_writes_leave_the_page_cache(
    storage: LocalDiskStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tus object's bytes leave the page cache once on disk, across checkpoints and
    writers (each PATCH drops what it wrote, nothing before it), and read back whole."""
    spy = DiskSpy(monkeypatch, 3_000_000)
    key = RESUMABLE_PREFIX + uuid.uuid4().hex
    data = os.urandom(16_000_000)
    offset, state = 0, {}  # type: ignore[var-annotated]
    for size in (2_000_000, 12_000_000, 2_000_000):
        state = append(storage, key, offset, state, data[offset:offset + size], len(data),
                       final=offset + size == len(data), chunk=1_000_000)
        offset += size
    storage.complete_resumable("quarantine", key, state, len(data))
    # the first PATCH is small; the second's windows go a window behind, then the rest
    # after its checkpoint; the third's after its checkpoint (a large object now)
    assert spy.dropped == [(2_000_000, 3_000_000), (5_000_000, 3_000_000),
                           (8_000_000, 6_000_000), (14_000_000, 2_000_000)]
    with storage.open_reader("quarantine", key) as reader:
        assert reader.read() == data


def _fail_on_temp_files(monkeypatch: pytest.MonkeyPatch, name: str, code: int) -> None:
    """Make ``os.<name>`` fail with ``code`` on temporary files only."""
    real = getattr(os, name)

    def faulty(fd: int, *args: object) -> object:
        if ".incomplete" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd, *args)

    monkeypatch.setattr(os, name, faulty)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_full_disk_while_writing(
    storage: LocalDiskStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    key = new_key()
    writer = storage.open_writer("quarantine", key)
    writer.write(b"small, buffered")
    _fail_on_temp_files(monkeypatch, "write", code)
    with pytest.raises(StorageUnavailable):
        writer.write(os.urandom(2 * 1024 * 1024))
    writer.abort()
    assert list((tmp_path / "upload-quarantine" / ".incomplete").iterdir()) == []
    assert not storage.exists("quarantine", key)


def test_full_disk_at_commit(
    storage: LocalDiskStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    writer = storage.open_writer("quarantine", key)
    writer.write(b"data")
    _fail_on_temp_files(monkeypatch, "fsync", errno.ENOSPC)
    with pytest.raises(StorageUnavailable):
        writer.commit()
    writer.abort()
    assert list((tmp_path / "upload-quarantine" / ".incomplete").iterdir()) == []
    assert not storage.exists("quarantine", key)


def test_other_os_errors_pass_through(
    storage: LocalDiskStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = storage.open_writer("quarantine", new_key())
    _fail_on_temp_files(monkeypatch, "write", errno.EBADF)
    with pytest.raises(OSError) as info:
        writer.write(os.urandom(2 * 1024 * 1024))
    assert not isinstance(info.value, StorageUnavailable)
    assert info.value.errno == errno.EBADF


def test_move_into_new_subdirectory(storage: LocalDiskStorage) -> None:
    put(storage, "quarantine", "a/b/c", b"deep")
    storage.move("quarantine", "perm", "a/b/c")
    assert storage.size("perm", "a/b/c") == 4


def test_check_fails_without_bucket_directory(storage: LocalDiskStorage, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "upload-perm")
    with pytest.raises(StorageUnavailable):
        storage.check()
