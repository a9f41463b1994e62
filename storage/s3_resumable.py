"""Resumable objects on S3 (the ``ResumableStorage`` capability of the s3 driver).

An incomplete object is a multipart upload on its final key, created with its first
part. Parts are sent as they fill (``PART_SIZE``, 8 MiB, or more so that the final size
fits in 9,000 parts). At a checkpoint, what is left over goes as a part of its own when it
is at least S3's 5 MiB minimum, or as the last part when nothing follows; a shorter tail
is kept in a small object ``.resumable/<name>.part-<n>`` (as tusd's ``.part``), never in
memory between requests, and read back by the next writer. The state to record is
``{"upload_id", "parts": [[number, etag, size], ...], "tail": n or None, "tail_size"}``:
a writer that died after sending parts it never checkpointed leaves parts that the next
writer overwrites (same numbers) and that completion, which lists the recorded parts
only, leaves out. A tail replaced by a recorded checkpoint is deleted (``recorded``);
``complete_resumable`` and ``discard_resumable`` remove any left.

``cleanup_incomplete`` leaves multipart uploads under ``resumable/`` alone and
``list_keys`` never shows ``.resumable/`` tails: their owner discards them.
"""
from __future__ import annotations

import errno
import io
import math
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from storage import RESUMABLE_PREFIX, ResumableStorage, ResumableWriter

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
PART_BUDGET = 9000  # of S3's 10,000: room for short parts cut at checkpoints
TAIL_PREFIX = "." + RESUMABLE_PREFIX


def tail_key(key: str, generation: int) -> str:
    return f".{key}.part-{generation}"


def key_of_tail(tail: str) -> str:
    return tail[1:].rsplit(".part-", 1)[0]


class S3ResumableWriter(ResumableWriter):
    def __init__(self, client: Any, bucket: str, key: str, offset: int,
                 state: dict[str, Any], size_hint: int, translate: Callable[[str], Any]) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._translate = translate
        mib = 1024 * 1024
        self._part_size = max(PART_SIZE, math.ceil(size_hint / PART_BUDGET / mib) * mib)
        self._upload_id: str | None = state.get("upload_id")
        self._parts: list[list[Any]] = [list(p) for p in state.get("parts", ())]
        self._tail: int | None = state.get("tail")
        self._stale: list[int] = []
        self._dirty = False
        self._buffer = io.BytesIO()
        stored = sum(size for _, _, size in self._parts) + int(state.get("tail_size", 0))
        if stored != offset:
            raise FileNotFoundError(errno.ENOENT, f"resumable state holds {stored} bytes, "
                                    f"its checkpoint names {offset}", key)
        if self._tail is not None:
            with translate(f"{bucket}/{key} tail"):
                body = client.get_object(Bucket=bucket, Key=tail_key(key, self._tail))["Body"]
                self._buffer.write(body.read())
            if self._buffer.tell() != state.get("tail_size"):
                raise FileNotFoundError(errno.ENOENT, "resumable tail is short", key)
        self.offset = offset

    @property
    def buffered(self) -> int:
        return self._buffer.tell()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self._part_size - self._buffer.tell()
            self._buffer.write(view[:room])
            view = view[room:]
            if self._buffer.tell() >= self._part_size:
                self._upload_part()
        self.offset += len(data)
        self._dirty = True

    def checkpoint(self, final: bool = False) -> dict[str, Any]:
        previous = self._tail
        if not self._dirty and not final:
            return self.state()
        if self._buffer.tell() and (final or self._buffer.tell() >= MIN_PART_SIZE):
            self._upload_part()
        if self._buffer.tell():
            generation = (previous or 0) + 1
            self._buffer.seek(0)
            with self._translate(f"{self._bucket}/{self._key} tail"):
                self._client.put_object(Bucket=self._bucket, Key=tail_key(self._key, generation),
                                        Body=self._buffer.getvalue())
            self._buffer.seek(0, io.SEEK_END)
            self._tail = generation
        else:
            self._tail = None
        self._dirty = False
        if previous is not None and previous != self._tail:
            self._stale.append(previous)
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"upload_id": self._upload_id, "parts": self._parts, "tail": self._tail,
                "tail_size": self._buffer.tell() if self._tail is not None else 0}

    def recorded(self) -> None:
        for generation in self._stale:
            try:
                self._client.delete_object(Bucket=self._bucket,
                                           Key=tail_key(self._key, generation))
            except Exception:  # noqa: BLE001 - completion or discard removes it later
                pass
        self._stale = []

    def close(self) -> None:
        self._buffer = io.BytesIO()

    def _upload_part(self) -> None:
        what = f"{self._bucket}/{self._key}"
        with self._translate(what):
            if self._upload_id is None:
                created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            size = self._buffer.tell()
            body, self._buffer = self._buffer, io.BytesIO()
            body.seek(0)
            response = self._client.upload_part(Bucket=self._bucket, Key=self._key,
                                                UploadId=self._upload_id, PartNumber=number,
                                                Body=body)
        self._parts.append([number, response["ETag"], size])


class S3Resumable(ResumableStorage):
    """Mixin of ``S3Storage``, whose client, bucket names and error translation it uses."""

    _client: Any
    _name: Callable[[str], str]

    def open_resumable(self, bucket: str, key: str, offset: int, state: dict[str, Any],
                       size_hint: int) -> ResumableWriter:
        from storage.s3 import _translate

        _check(key)
        return S3ResumableWriter(self._client, self._name(bucket), key, offset, state,
                                 size_hint, _translate)

    def complete_resumable(self, bucket: str, key: str, state: dict[str, Any],
                           size: int) -> None:
        from storage.s3 import _code, _translate

        _check(key)
        name = self._name(bucket)
        with _translate(f"{bucket}/{key}"):
            if state.get("upload_id") is None:
                if size:
                    raise FileNotFoundError(errno.ENOENT, "no parts to complete", key)
                self._client.put_object(Bucket=name, Key=key, Body=b"")
            else:
                parts = [{"PartNumber": n, "ETag": etag} for n, etag, _ in state["parts"]]
                try:
                    self._client.complete_multipart_upload(
                        Bucket=name, Key=key, UploadId=state["upload_id"],
                        MultipartUpload={"Parts": parts})
                except ClientError as exc:
                    if _code(exc) != "NoSuchUpload" or self._stored_size(name, key) != size:
                        raise
        self.discard_resumable(bucket, key)

    def _stored_size(self, name: str, key: str) -> int | None:
        try:
            return int(self._client.head_object(Bucket=name, Key=key)["ContentLength"])
        except ClientError:
            return None

    def discard_resumable(self, bucket: str, key: str) -> None:
        from storage.s3 import _code, _translate

        _check(key)
        name = self._name(bucket)
        with _translate(f"{bucket}/{key}"):
            for upload in self._multipart_uploads(name, key):
                if upload["Key"] != key:
                    continue
                try:
                    self._client.abort_multipart_upload(Bucket=name, Key=key,
                                                        UploadId=upload["UploadId"])
                except ClientError as exc:
                    if _code(exc) != "NoSuchUpload":
                        raise
            for item in self._objects(name, f".{key}.part-"):
                self._client.delete_object(Bucket=name, Key=item["Key"])

    def list_resumable(self, bucket: str) -> Iterator[tuple[str, float]]:
        from storage.s3 import _translate

        name = self._name(bucket)
        with _translate(f"bucket {bucket}"):
            for upload in self._multipart_uploads(name, RESUMABLE_PREFIX):
                yield upload["Key"], upload["Initiated"].timestamp()
            for item in self._objects(name, TAIL_PREFIX):
                yield key_of_tail(item["Key"]), item["LastModified"].timestamp()

    def _multipart_uploads(self, name: str, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=name, Prefix=prefix):
            yield from page.get("Uploads", ())

    def _objects(self, name: str, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name, Prefix=prefix):
            yield from page.get("Contents", ())


def _check(key: str) -> None:
    if not key.startswith(RESUMABLE_PREFIX) or len(key) == len(RESUMABLE_PREFIX):
        raise ValueError(f"invalid resumable key {key!r}")
