"""The contract of the optional ``ResumableStorage`` capability (storage/__init__.py): a
driver's tests subclass ``ResumableContract`` with a ``storage`` fixture."""
from __future__ import annotations

import os
import uuid

import pytest

from storage import RESUMABLE_PREFIX, ResumableStorage, resumable
from tests.contracts.storage_contract import MIB, read_all

BUCKET = "quarantine"


def new_key() -> str:
    return RESUMABLE_PREFIX + uuid.uuid4().hex


def append(store: ResumableStorage, key: str, offset: int, state: dict, data: bytes,
           size_hint: int, final: bool = False, chunk: int = 1_000_003) -> dict:
    writer = store.open_resumable(BUCKET, key, offset, state, size_hint)
    try:
        for start in range(0, len(data), chunk):
            writer.write(data[start:start + chunk])
        new_state = writer.checkpoint(final)
        assert writer.offset == offset + len(data)
        writer.recorded()
        return new_state
    finally:
        writer.close()


class ResumableContract:
    def test_capability_is_there(self, storage) -> None:  # type: ignore[no-untyped-def]
        assert resumable(storage) is storage

    @pytest.mark.parametrize("pieces", [(0,), (5,), (3 * MIB + 1, 2 * MIB, 7),
                                        (9 * MIB, 1, 6 * MIB - 5, 0, 4 * MIB)])
    def test_append_across_writers_then_complete(self, storage, pieces) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        data = os.urandom(sum(pieces))
        offset, state = 0, {}  # type: ignore[var-annotated]
        for index, size in enumerate(pieces):
            state = append(storage, key, offset, state, data[offset:offset + size], len(data),
                           final=index == len(pieces) - 1)
            offset += size
        assert key not in set(storage.list_keys(BUCKET))
        assert key in {k for k, _ in storage.list_resumable(BUCKET)} or not data
        storage.complete_resumable(BUCKET, key, state, len(data))
        storage.complete_resumable(BUCKET, key, state, len(data))  # idempotent
        assert read_all(storage, BUCKET, key) == data
        assert key in set(storage.list_keys(BUCKET))
        assert not [k for k, _ in storage.list_resumable(BUCKET) if k == key]

    def test_unrecorded_bytes_are_dropped(self, storage) -> None:  # type: ignore[no-untyped-def]
        """A writer that died after writing past its checkpoint: the next writer resumes
        at the recorded offset, and what the dead one wrote is not in the object."""
        key = new_key()
        first, lost, second = os.urandom(6 * MIB), os.urandom(9 * MIB), os.urandom(3 * MIB)
        state = append(storage, key, 0, {}, first, 20 * MIB)
        dead = storage.open_resumable(BUCKET, key, len(first), state, 20 * MIB)
        dead.write(lost)
        dead.checkpoint()  # durable in storage, but never recorded
        dead.close()
        state = append(storage, key, len(first), state, second, 20 * MIB, final=True)
        storage.complete_resumable(BUCKET, key, state, len(first) + len(second))
        assert read_all(storage, BUCKET, key) == first + second

    def test_discard(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        append(storage, key, 0, {}, os.urandom(6 * MIB + 3), 20 * MIB)
        assert key in {k for k, _ in storage.list_resumable(BUCKET)}
        storage.discard_resumable(BUCKET, key)
        storage.discard_resumable(BUCKET, key)
        assert key not in {k for k, _ in storage.list_resumable(BUCKET)}
        assert not storage.exists(BUCKET, key)

    def test_cleanup_leaves_resumable_objects_alone(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        data = os.urandom(6 * MIB + 3)
        state = append(storage, key, 0, {}, data, 20 * MIB)
        storage.cleanup_incomplete(0)
        state = append(storage, key, len(data), state, b"x", 20 * MIB, final=True)
        storage.complete_resumable(BUCKET, key, state, len(data) + 1)
        assert read_all(storage, BUCKET, key) == data + b"x"
