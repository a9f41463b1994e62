"""The contract every storage driver passes (see storage/__init__.py).

A driver's tests subclass ``StorageContract`` and provide a ``storage`` fixture; signed
URLs must be fetchable over HTTP from 127.0.0.1 (the localdisk tests run a small download
server for that).
"""
from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
import uuid
from itertools import cycle

import pytest

from storage import Storage, new_object_key

MIB = 1024 * 1024
# Odd sizes, so writes straddle the S3 driver's 8 MiB part boundaries.
ODD_CHUNKS = (1, 4097, 65_521, 1_048_573, 3_333_333, 7)
# No proxy from the environment for loopback fetches.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def new_key(prefix: str = "advisor") -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def put(storage: Storage, bucket: str, key: str, data: bytes, chunk: int = 65536) -> None:
    writer = storage.open_writer(bucket, key)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    writer.commit()


def read_all(storage: Storage, bucket: str, key: str) -> bytes:
    reader = storage.open_reader(bucket, key)
    try:
        return reader.read()
    finally:
        reader.close()


def write_odd_chunks(writer: object, data: bytes) -> None:
    view, sizes = memoryview(data), cycle(ODD_CHUNKS)
    while view:
        size = next(sizes)
        writer.write(bytes(view[:size]))  # type: ignore[attr-defined]
        view = view[size:]


def fetch(url: str) -> bytes:
    with OPENER.open(url, timeout=10) as response:
        return response.read()


def tamper(url: str) -> str:
    """The same URL with the last character of its signature changed."""
    base, marker, rest = url.rpartition("ignature=")
    flipped = ("0" if rest[0] != "0" else "1") + rest[1:]
    return f"{base}{marker}{flipped}"


class StorageContract:
    """Tests every driver must pass; subclasses provide the ``storage`` fixture."""

    #: False when the test backend serves signed URLs without checking them (moto does
    #: not verify presigned signatures or expiry); the refusal tests are then skipped.
    refuses_bad_urls = True

    def skip_unless_refusing(self) -> None:
        if not self.refuses_bad_urls:
            pytest.skip("this test backend does not verify signed URLs")

    @pytest.mark.parametrize("size", [0, 1, 1000, 200_000])
    def test_write_commit_read(self, storage: Storage, size: int) -> None:
        data, key = os.urandom(size), new_key()
        writer = storage.open_writer("quarantine", key)
        writer.write(data)
        writer.commit()
        assert writer.size == size
        assert read_all(storage, "quarantine", key) == data
        assert storage.size("quarantine", key) == size
        assert storage.exists("quarantine", key)

    def test_large_object_in_odd_chunks(self, storage: Storage) -> None:
        data, key = os.urandom(20 * MIB + 3), new_key()
        writer = storage.open_writer("quarantine", key)
        write_odd_chunks(writer, data)
        writer.commit()
        assert storage.size("quarantine", key) == len(data)
        digest = hashlib.sha256(read_all(storage, "quarantine", key)).hexdigest()
        assert digest == hashlib.sha256(data).hexdigest()

    def test_reader_reads_in_pieces(self, storage: Storage) -> None:
        data, key = os.urandom(100_000), new_key()
        put(storage, "quarantine", key, data)
        reader = storage.open_reader("quarantine", key)
        pieces = []
        while piece := reader.read(7_777):
            assert len(piece) <= 7_777
            pieces.append(piece)
        reader.close()
        assert b"".join(pieces) == data

    def test_commit_replaces_existing_object(self, storage: Storage) -> None:
        key = new_key()
        put(storage, "quarantine", key, b"old contents")
        put(storage, "quarantine", key, b"new")
        assert read_all(storage, "quarantine", key) == b"new"

    def test_nothing_visible_before_commit(self, storage: Storage) -> None:
        key = new_key()
        writer = storage.open_writer("quarantine", key)
        writer.write(os.urandom(9 * MIB))
        assert not storage.exists("quarantine", key)
        assert list(storage.list_keys("quarantine")) == []
        with pytest.raises(FileNotFoundError):
            storage.open_reader("quarantine", key)
        writer.commit()
        assert storage.exists("quarantine", key)
        assert list(storage.list_keys("quarantine")) == [key]

    @pytest.mark.parametrize("size", [0, 10, 9 * MIB])
    def test_abort_leaves_nothing(self, storage: Storage, size: int) -> None:
        key = new_key()
        writer = storage.open_writer("quarantine", key)
        if size:
            write_odd_chunks(writer, os.urandom(size))
        writer.abort()
        writer.abort()
        assert not storage.exists("quarantine", key)
        assert list(storage.list_keys("quarantine")) == []
        assert storage.cleanup_incomplete(0) == 0

    def test_move_between_buckets(self, storage: Storage) -> None:
        data, key = os.urandom(50_000), new_key()
        put(storage, "quarantine", key, data)
        storage.move("quarantine", "perm", key)
        assert read_all(storage, "perm", key) == data
        assert not storage.exists("quarantine", key)
        assert list(storage.list_keys("perm")) == [key]
        assert list(storage.list_keys("quarantine")) == []

    def test_move_is_idempotent(self, storage: Storage) -> None:
        key = new_key()
        put(storage, "quarantine", key, b"payload")
        storage.move("quarantine", "reject", key)
        storage.move("quarantine", "reject", key)
        assert read_all(storage, "reject", key) == b"payload"
        assert not storage.exists("quarantine", key)

    def test_move_missing_object(self, storage: Storage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.move("quarantine", "perm", new_key())

    def test_move_many(self, storage: Storage) -> None:
        keys = [new_key() for _ in range(4)]
        for key in keys[:3]:
            put(storage, "quarantine", key, key.encode())
        storage.move("quarantine", "perm", keys[2])  # moved already: a redelivery
        results = storage.move_many([("quarantine", "perm", keys[0]),
                                     ("quarantine", "reject", keys[1]),
                                     ("quarantine", "perm", keys[2]),
                                     ("quarantine", "perm", keys[3])])
        assert results[:3] == [None, None, None] and isinstance(results[3], FileNotFoundError)
        assert read_all(storage, "perm", keys[0]) == keys[0].encode()
        assert read_all(storage, "reject", keys[1]) == keys[1].encode()
        assert read_all(storage, "perm", keys[2]) == keys[2].encode()
        assert list(storage.list_keys("quarantine")) == []

    def test_missing_object(self, storage: Storage) -> None:
        key = new_key()
        with pytest.raises(FileNotFoundError):
            storage.open_reader("perm", key)
        with pytest.raises(FileNotFoundError):
            storage.size("perm", key)
        assert not storage.exists("perm", key)

    def test_delete(self, storage: Storage) -> None:
        key = new_key()
        put(storage, "perm", key, b"x")
        storage.delete("perm", key)
        assert not storage.exists("perm", key)
        storage.delete("perm", key)
        storage.delete("perm", new_key())

    def test_list_keys(self, storage: Storage) -> None:
        keys = {"top", "advisor/a", "advisor/deep/b", "assets/c"}
        for key in keys:
            put(storage, "perm", key, key.encode())
        put(storage, "reject", "elsewhere", b"r")
        assert set(storage.list_keys("perm")) == keys
        assert list(storage.list_keys("reject")) == ["elsewhere"]
        assert list(storage.list_keys("quarantine")) == []

    def test_cleanup_incomplete(self, storage: Storage) -> None:
        key = new_key()
        put(storage, "quarantine", "committed", b"stays")
        writer = storage.open_writer("quarantine", key)
        writer.write(os.urandom(9 * MIB))
        time.sleep(0.01)
        assert storage.cleanup_incomplete(0) >= 1
        writer.abort()
        assert storage.cleanup_incomplete(0) == 0
        assert not storage.exists("quarantine", key)
        assert list(storage.list_keys("quarantine")) == ["committed"]

    def test_cleanup_leaves_writes_younger_than_min_age(self, storage: Storage) -> None:
        # the key tells its age even where the backend's is wrong (moto reports every
        # multipart upload as started in 2010)
        key = new_object_key()
        writer = storage.open_writer("quarantine", key)
        writer.write(os.urandom(9 * MIB))
        assert storage.cleanup_incomplete(60) == 0
        writer.commit()
        assert storage.exists("quarantine", key)

    def test_list_aged(self, storage: Storage) -> None:
        put(storage, "quarantine", "a/b", b"x")
        young = new_object_key()
        put(storage, "quarantine", young, b"y")
        aged = dict(storage.list_aged("quarantine"))
        assert set(aged) == {"a/b", young}
        assert all(-5 < age < 60 for age in aged.values()), aged

    def test_signed_url_fetches_the_object(self, storage: Storage) -> None:
        data, key = os.urandom(300_000), new_key()
        put(storage, "perm", key, data)
        url = storage.signed_url("perm", key, 60)
        assert url.startswith("http://127.0.0.1:")
        assert fetch(url) == data

    def test_signed_url_tampered_is_refused(self, storage: Storage) -> None:
        self.skip_unless_refusing()
        key = new_key()
        put(storage, "perm", key, b"secret")
        with pytest.raises(urllib.error.HTTPError) as info:
            fetch(tamper(storage.signed_url("perm", key, 60)))
        assert info.value.code == 403
        info.value.close()

    def test_signed_url_expires(self, storage: Storage) -> None:
        self.skip_unless_refusing()
        key = new_key()
        put(storage, "perm", key, b"secret")
        url = storage.signed_url("perm", key, 1)
        time.sleep(2.1)
        with pytest.raises(urllib.error.HTTPError) as info:
            fetch(url)
        assert info.value.code == 403
        info.value.close()

    def test_check(self, storage: Storage) -> None:
        storage.check()
