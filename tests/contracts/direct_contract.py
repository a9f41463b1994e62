"""The contract of the optional direct-upload capabilities (storage/direct.py): a driver's
tests subclass ``DirectContract`` with a ``storage`` fixture whose part URLs can be PUT to
from 127.0.0.1 (localdisk's tests run the gateway's part handler for that)."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import uuid

import pytest

from storage import AREAS_PREFIX
from storage.direct import (
    MIN_PART_SIZE,
    PartsRefused,
    direct_uploads,
    prefix_listing,
)
from tests.contracts.storage_contract import OPENER, read_all

BUCKET = "quarantine"


def new_key() -> str:
    return f"{AREAS_PREFIX}{uuid.uuid4()}/{uuid.uuid4().hex}"


def put_part(url: str, data: bytes) -> str:
    """PUT one part the way any HTTP client would; returns the answer's ETag."""
    # urllib would say application/x-www-form-urlencoded, which moto's server parses
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    with OPENER.open(request, timeout=30) as response:
        assert response.status == 200
        return str(response.headers["ETag"])


def quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


class DirectContract:
    #: what a part PUT after the upload was aborted gets (S3: 404 NoSuchUpload)
    late_part_codes: tuple[int, ...] = (404,)

    def start(self, storage, key: str, parts: list[bytes]) -> tuple[dict, list[tuple[int, str]]]:  # type: ignore[no-untyped-def]
        state = storage.start_direct(BUCKET, key)
        sent = []
        for number, data in enumerate(parts, 1):
            url = storage.direct_part_url(BUCKET, key, state, number, 16 * 1024 * 1024, 600)
            sent.append((number, put_part(url, data)))
        return state, sent

    def test_capabilities_are_there(self, storage) -> None:  # type: ignore[no-untyped-def]
        assert direct_uploads(storage) is storage
        assert prefix_listing(storage) is storage

    def test_parts_then_complete(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        parts = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE + 3), os.urandom(1000)]
        state, sent = self.start(storage, key, parts)
        assert [etag for _, etag in sent] == [quoted_md5(p) for p in parts]
        listed = storage.direct_parts(BUCKET, key, state)
        assert [(p.number, p.etag, p.size) for p in listed] == [
            (n, quoted_md5(p), len(p)) for n, p in enumerate(parts, 1)]
        assert key not in set(storage.list_keys(BUCKET))
        assert key in {k for k, _, _ in storage.list_direct(BUCKET, AREAS_PREFIX)}
        storage.complete_direct(BUCKET, key, state, sent)
        storage.complete_direct(BUCKET, key, state, sent)  # idempotent
        assert read_all(storage, BUCKET, key) == b"".join(parts)
        assert key in set(storage.list_keys(BUCKET))
        assert key not in {k for k, _, _ in storage.list_direct(BUCKET, AREAS_PREFIX)}
        with pytest.raises(FileNotFoundError):
            storage.direct_parts(BUCKET, key, state)

    def test_a_part_sent_again_replaces_it(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        state, _ = self.start(storage, key, [b"first version"])
        url = storage.direct_part_url(BUCKET, key, state, 1, 1024, 600)
        etag = put_part(url, b"second version")
        storage.complete_direct(BUCKET, key, state, [(1, etag)])
        assert read_all(storage, BUCKET, key) == b"second version"

    def test_wrong_etag_is_refused_and_the_upload_stays_open(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        state, sent = self.start(storage, key, [os.urandom(MIN_PART_SIZE), b"tail"])
        wrong = [(1, sent[0][1]), (2, quoted_md5(b"not the tail"))]
        with pytest.raises(PartsRefused):
            storage.complete_direct(BUCKET, key, state, wrong)
        assert not storage.exists(BUCKET, key)
        storage.complete_direct(BUCKET, key, state, sent)
        assert storage.size(BUCKET, key) == MIN_PART_SIZE + 4

    def test_missing_or_small_parts_are_refused(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        state, sent = self.start(storage, key, [b"x" * 1000, b"y" * 10])
        with pytest.raises(PartsRefused):  # part 1 is under 5 MiB and not the last
            storage.complete_direct(BUCKET, key, state, sent)
        with pytest.raises(PartsRefused):  # part 3 was never sent
            storage.complete_direct(BUCKET, key, state, [*sent[1:], (3, quoted_md5(b""))])
        with pytest.raises(PartsRefused):  # out of order
            storage.complete_direct(BUCKET, key, state, [sent[1], sent[0]])
        storage.complete_direct(BUCKET, key, state, sent[1:])  # part 2 alone is fine
        assert read_all(storage, BUCKET, key) == b"y" * 10

    def test_abort(self, storage) -> None:  # type: ignore[no-untyped-def]
        key = new_key()
        state, _sent = self.start(storage, key, [b"abc"])
        storage.abort_direct(BUCKET, key, state)
        storage.abort_direct(BUCKET, key, state)  # twice is fine
        with pytest.raises(FileNotFoundError):
            storage.direct_parts(BUCKET, key, state)
        url = storage.direct_part_url(BUCKET, key, state, 2, 1024, 600)
        with pytest.raises(urllib.error.HTTPError) as refused:
            put_part(url, b"late")
        assert refused.value.code in self.late_part_codes
        assert key not in {k for k, _, _ in storage.list_direct(BUCKET, AREAS_PREFIX)}
        assert not storage.exists(BUCKET, key)

    def test_list_direct_and_prefix(self, storage) -> None:  # type: ignore[no-untyped-def]
        area = f"{AREAS_PREFIX}{uuid.uuid4()}/"
        done, open_key, other = area + "a" * 32, area + "b" * 32, new_key()
        state, sent = self.start(storage, done, [b"done"])
        storage.complete_direct(BUCKET, done, state, sent)
        open_state = storage.start_direct(BUCKET, open_key)
        storage.start_direct(BUCKET, other)
        listed = {k: s for k, s, _ in storage.list_direct(BUCKET, area)}
        assert listed == {open_key: open_state}
        assert list(storage.list_prefix(BUCKET, area)) == [done]
        storage.abort_direct(BUCKET, open_key, open_state)
        assert not list(storage.list_direct(BUCKET, area))

    def test_general_cleanup_leaves_area_uploads_alone(self, storage) -> None:  # type: ignore[no-untyped-def]
        """A direct upload lasts as long as its area wants (days), far past the ingest
        deadline the general clean-up removes half-written objects after."""
        key = new_key()
        state, _ = self.start(storage, key, [b"part"])
        storage.cleanup_incomplete(-1.0)  # everything counts as old
        assert key in {k for k, _, _ in storage.list_direct(BUCKET, AREAS_PREFIX)}
        assert [p.size for p in storage.direct_parts(BUCKET, key, state)] == [4]
