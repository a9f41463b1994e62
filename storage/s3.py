"""S3 storage (AWS S3 or any S3-compatible endpoint) through boto3.

Settings: ``S3_ENDPOINT_URL`` (unset: AWS), ``S3_QUARANTINE`` / ``S3_PERM`` /
``S3_REJECT`` (bucket names, defaults ``upload-quarantine``, ``upload-perm``,
``upload-reject``; created at construction when missing). Credentials and region come from
the usual boto3 sources (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, profiles, roles);
the region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, default ``us-east-1``. A bucket
that goes missing later is created again by the next call that misses it, and by the
health check (``storage.s3buckets``).

Client options: connect timeout 5 s, read timeout 60 s, 3 attempts in botocore's
"standard" retry mode (so an unreachable endpoint fails within a few seconds), a
connection pool of ``UPLOAD_THREADS`` + 4, endpoints resolved once per bucket
(``storage.s3endpoints``). Checksums are computed only where S3 requires
them (``when_required``), which keeps older S3-compatible servers working. Requests and
presigned URLs use SigV4; a presigned URL lives at most 7 days (longer expiries are cut).

Writing: data is buffered up to ``PART_SIZE`` (8 MiB). An object smaller than one part at
commit is sent with one ``PutObject``; otherwise a multipart upload is created when the
first part is full, each full part is uploaded as it fills, and ``commit`` uploads the
remainder and completes the upload. A writer never holds more than one part in memory.
Limits: 10,000 parts, so at most 80 GiB per object at the default part size. ``move`` is
``CopyObject`` + ``DeleteObject``; a ``HeadObject`` only when the copy finds no source (a
redelivered verdict: is it in the destination?) or one over 5 GiB (then a managed
multipart copy). ``move_many`` (a batch of verdicts) runs the copies of its moves
concurrently, at most ``MOVE_CONCURRENCY`` at once (within the client's connection pool),
then removes the sources with one ``DeleteObjects`` per source bucket and 1,000 keys: a
batch of N promotions costs N + 1 requests in about two round trips, where it was 3 N one
after another (tests/storage/test_s3.py counts them through a latency proxy).

Resumable objects (tus uploads) are multipart uploads under ``resumable/`` kept across
requests, with short tails in ``.resumable/`` objects (``storage.s3_resumable``). Upload
areas' direct uploads (presigned part URLs), prefix listing and object tags are in
``storage.s3_direct``.

``cleanup_incomplete(min_age)`` aborts the unfinished multipart uploads in the three
buckets, but the resumable ones, that are older than ``min_age`` (``storage.s3_cleanup``).

Clients are thread-safe (sessions are not): each ``S3Storage`` builds one session and one
client at construction and shares the client between threads; a writer is used by one
thread at a time.

Errors: a missing object (``NoSuchKey``, 404) is ``FileNotFoundError``; connection
failures, timeouts, 5xx and throttling (``SlowDown``) are ``StorageUnavailable``.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from core.settings import Settings
from storage import BUCKETS, ObjectWriter, Storage, StorageUnavailable
from storage.disposition import content_disposition
from storage.s3_cleanup import S3Cleanup
from storage.s3_direct import S3Direct
from storage.s3_resumable import TAIL_PREFIX, S3Resumable
from storage.s3buckets import BucketKeepingClient
from storage.s3endpoints import cache_endpoints

logger = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
MAX_COPY_SIZE = 5 * 1024 * 1024 * 1024  # larger objects need a multipart copy
COPY_CHUNK_SIZE = 512 * 1024 * 1024
MOVE_CONCURRENCY = 16  # copies of one move_many in flight at once (bounded by the pool)
DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
# what CopyObject answers for a source over 5 GiB (then a managed multipart copy)
TOO_LARGE_TO_COPY = frozenset({"InvalidRequest", "EntityTooLarge"})
MAX_URL_EXPIRY = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week
DEFAULT_REGION = "us-east-1"
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# NoSuchBucket: the bucket vanished after start-up, a deployment fault the client can't fix.
UNAVAILABLE_CODES = frozenset(
    ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling")
    + ("ThrottlingException", "NoSuchBucket")
)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _is_not_found(exc: ClientError) -> bool:
    code = _code(exc)
    return code in NOT_FOUND_CODES or (_status(exc) == 404 and code not in UNAVAILABLE_CODES)


@contextmanager
def _translate(what: str) -> Iterator[None]:
    """S3 failures at the driver boundary: 404 → FileNotFoundError, outage → unavailable."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in UNAVAILABLE_CODES or _status(exc) >= 500:
            raise StorageUnavailable(f"S3 {what}: {_code(exc)}") from exc
        if _is_not_found(exc):
            raise FileNotFoundError(errno.ENOENT, "no such object", what) from exc
        raise
    except (BotoConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise StorageUnavailable(f"S3 {what}: {exc}") from exc


class S3Writer(ObjectWriter):
    """Streams one object: a single PutObject when small, else a multipart upload."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int = PART_SIZE) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buffer = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False
        self.size = 0

    @property
    def buffered(self) -> int:
        """Bytes held in memory, waiting for the next part."""
        return self._buffer.tell()

    def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("write to a committed or aborted object")
        view = memoryview(data)
        while view:
            room = self._part_size - self._buffer.tell()
            self._buffer.write(view[:room])
            view = view[room:]
            if self._buffer.tell() >= self._part_size:
                self._guarded(self._upload_part)
        self.size += len(data)

    def commit(self) -> None:
        if self._done:
            raise ValueError("commit of a committed or aborted object")
        self._guarded(self._commit)
        self._done = True

    def abort(self) -> None:
        self._done = True
        self._buffer = io.BytesIO()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                logger.warning("cannot abort upload of %s: %s", self._key, exc)
        except (BotoConnectionError, HTTPClientError) as exc:
            # Left for cleanup_incomplete at the next start-up.
            logger.warning("cannot abort upload of %s: %s", self._key, exc)

    def _guarded(self, func: Callable[[], None]) -> None:
        try:
            with _translate(f"{self._bucket}/{self._key}"):
                func()
        except BaseException:
            self.abort()
            raise

    def _take_buffer(self) -> io.BytesIO:
        """The buffered part, rewound; the writer starts a fresh buffer (no copy)."""
        body, self._buffer = self._buffer, io.BytesIO()
        body.truncate()
        body.seek(0)
        return body

    def _upload_part(self) -> None:
        if self._upload_id is None:
            response = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = response["UploadId"]
        number = len(self._parts) + 1
        response = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._take_buffer(),
        )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})

    def _commit(self) -> None:
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._take_buffer())
            return
        if self._buffer.tell():
            self._upload_part()
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None


class S3Reader(io.RawIOBase):
    """The object's streaming body, with S3 errors translated while reading."""

    def __init__(self, body: Any, content_length: int, what: str) -> None:
        super().__init__()
        self._body = body
        self._what = what
        self.content_length = content_length

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with _translate(self._what):
            return cast(bytes, self._body.read(None if size is None or size < 0 else size))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _make_client(settings: Settings) -> Any:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = Config(
        region_name=region or DEFAULT_REGION,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        signature_version="s3v4",
        max_pool_connections=settings.upload_threads + 4,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
    cache_endpoints(client)  # an endpoint per bucket, not per object (storage/s3endpoints.py)
    return client


class S3Storage(S3Cleanup, S3Resumable, S3Direct, Storage):
    def __init__(
        self,
        settings: Settings,
        *,
        part_size: int = PART_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self._names = {name: settings.buckets[name] for name in BUCKETS}
        self._part_size = part_size
        self._tail_prefix = TAIL_PREFIX
        self._raw_client = _make_client(settings)
        self._move_workers = max(1, min(MOVE_CONCURRENCY, settings.upload_threads))
        self._move_pool: ThreadPoolExecutor | None = None
        self._move_pool_lock = threading.Lock()
        # a bucket that vanished later is created again by the call that misses it
        self._client = BucketKeepingClient(self._raw_client, self._names.values(),
                                           self._ensure_bucket)
        for name in dict.fromkeys(self._names.values()):
            with _translate(f"bucket {name}"):
                self._ensure_bucket(name)

    @property
    def client(self) -> Any:
        """The boto3 S3 client (thread-safe), for tests and tools."""
        return self._raw_client

    def _ensure_bucket(self, name: str) -> None:
        try:
            self._raw_client.head_bucket(Bucket=name)
            return
        except ClientError as exc:
            if _status(exc) != 404:
                raise
        region = self._raw_client.meta.region_name
        options: dict[str, Any] = {}
        if region != DEFAULT_REGION:
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._raw_client.create_bucket(Bucket=name, **options)
            logger.info("created bucket %s", name)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise

    def _name(self, bucket: str) -> str:
        try:
            return self._names[bucket]
        except KeyError:
            raise ValueError(f"unknown bucket {bucket!r}; use one of {BUCKETS}") from None

    def _head(self, name: str, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when it does not exist."""
        try:
            return cast(dict[str, Any], self._client.head_object(Bucket=name, Key=key))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise

    def open_writer(self, bucket: str, key: str) -> ObjectWriter:
        return S3Writer(self._client, self._name(bucket), key, self._part_size)

    def open_reader(self, bucket: str, key: str) -> BinaryIO:
        what = f"{bucket}/{key}"
        with _translate(what):
            response = self._client.get_object(Bucket=self._name(bucket), Key=key)
        return cast(BinaryIO, S3Reader(response["Body"], response["ContentLength"], what))

    def size(self, bucket: str, key: str) -> int:
        with _translate(f"{bucket}/{key}"):
            head = self._head(self._name(bucket), key)
        if head is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", f"{bucket}/{key}")
        return int(head["ContentLength"])

    def exists(self, bucket: str, key: str) -> bool:
        with _translate(f"{bucket}/{key}"):
            return self._head(self._name(bucket), key) is not None

    def move(self, src_bucket: str, dst_bucket: str, key: str) -> None:
        src = self._name(src_bucket)
        with _translate(f"{src_bucket}/{key}"):
            if self._copy_over(src_bucket, dst_bucket, key):
                self._client.delete_object(Bucket=src, Key=key)

    def move_many(self, moves: Sequence[tuple[str, str, str]]) -> list[FileNotFoundError | None]:
        """Head and copy every object concurrently (bounded), then delete the sources in
        batches. Each object is in its destination before any source is deleted, so a
        crash in between leaves copies that the next (redelivered) move completes."""
        if len(moves) <= 1:
            return super().move_many(moves)
        futures = [self._pool().submit(self._copy_for_batch, *move) for move in moves]
        results: list[FileNotFoundError | None] = []
        sources: dict[str, list[str]] = {}
        failure: BaseException | None = None
        for (src_bucket, _, key), future in zip(moves, futures):
            try:
                copied = future.result()
            except FileNotFoundError as exc:
                results.append(exc)
                continue
            except BaseException as exc:  # noqa: BLE001 - raised once every copy is done
                failure = failure or exc
                results.append(None)
                continue
            results.append(None)
            if copied:
                sources.setdefault(self._name(src_bucket), []).append(key)
        if failure is not None:
            raise failure
        for name, keys in sources.items():
            self._delete_keys(name, keys)
        return results

    def _copy_for_batch(self, src_bucket: str, dst_bucket: str, key: str) -> bool:
        with _translate(f"{src_bucket}/{key}"):
            return self._copy_over(src_bucket, dst_bucket, key)

    def _copy_over(self, src_bucket: str, dst_bucket: str, key: str) -> bool:
        """Copy the object to its destination: True when its source is left to delete,
        False when it was moved already (a redelivered verdict); ``FileNotFoundError``
        when neither bucket has it. One CopyObject in the usual case: the source is
        looked at (HeadObject) only when the copy says it is missing or too large for
        one CopyObject (over 5 GiB: a managed multipart copy)."""
        src, dst = self._name(src_bucket), self._name(dst_bucket)
        what = f"{src_bucket}/{key}"
        if src == dst:
            if self._head(dst, key) is not None:
                return False
            raise FileNotFoundError(errno.ENOENT, "no such object", what)
        source = {"Bucket": src, "Key": key}
        try:
            self._client.copy_object(Bucket=dst, Key=key, CopySource=source)
            return True
        except ClientError as exc:
            if _is_not_found(exc):
                # moved already (a redelivery, a concurrent move), or missing everywhere
                if self._head(dst, key) is not None:
                    return False
                raise FileNotFoundError(errno.ENOENT, "no such object", what) from None
            if _code(exc) not in TOO_LARGE_TO_COPY:
                raise
        head = self._head(src, key)
        if head is None:
            if self._head(dst, key) is not None:
                return False
            raise FileNotFoundError(errno.ENOENT, "no such object", what)
        try:
            self._copy(src, dst, key, int(head["ContentLength"]))
        except ClientError as exc:
            # A concurrent move may have taken the source between head and copy.
            if _is_not_found(exc) and self._head(dst, key) is not None:
                return False
            raise
        return True

    def _delete_keys(self, name: str, keys: list[str]) -> None:
        with _translate(f"bucket {name}"):
            for start in range(0, len(keys), DELETE_BATCH):
                chunk = keys[start:start + DELETE_BATCH]
                response = self._client.delete_objects(
                    Bucket=name, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
                errors = response.get("Errors") or []
                if errors:  # the caller retries: each move finds its copy and deletes again
                    raise StorageUnavailable(
                        f"S3 bucket {name}: {len(errors)} source(s) not deleted after their "
                        f"copy ({errors[0].get('Code')})")

    def _pool(self) -> ThreadPoolExecutor:
        with self._move_pool_lock:
            if self._move_pool is None:
                self._move_pool = ThreadPoolExecutor(self._move_workers,
                                                     thread_name_prefix="s3-move")
            return self._move_pool

    def _copy(self, src: str, dst: str, key: str, size: int) -> None:
        source = {"Bucket": src, "Key": key}
        if size <= MAX_COPY_SIZE:
            self._client.copy_object(Bucket=dst, Key=key, CopySource=source)
            return
        config = TransferConfig(
            multipart_threshold=MAX_COPY_SIZE, multipart_chunksize=COPY_CHUNK_SIZE
        )
        self._client.copy(source, dst, key, Config=config)

    def delete(self, bucket: str, key: str) -> None:
        with _translate(f"{bucket}/{key}"):
            self._client.delete_object(Bucket=self._name(bucket), Key=key)

    def list_keys(self, bucket: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        with _translate(f"bucket {bucket}"):
            for page in paginator.paginate(Bucket=self._name(bucket)):
                for item in page.get("Contents", ()):
                    if not item["Key"].startswith(TAIL_PREFIX):
                        yield item["Key"]

    def signed_url(self, bucket: str, key: str, expires_in: int,
                   filename: str | None = None) -> str:
        params = {"Bucket": self._name(bucket), "Key": key}
        if filename:  # S3 answers with this header (a signed response override)
            params["ResponseContentDisposition"] = content_disposition(filename)
        return cast(
            str,
            self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=min(expires_in, MAX_URL_EXPIRY),
            ),
        )

    def check(self) -> None:
        for name in dict.fromkeys(self._names.values()):
            try:
                with _translate(f"bucket {name}"):
                    self._ensure_bucket(name)  # one that went missing is created again
            except ClientError as exc:
                raise StorageUnavailable(f"S3 bucket {name}: {_code(exc)}") from exc
            except FileNotFoundError as exc:
                raise StorageUnavailable(f"S3 bucket {name} is missing") from exc

    def close(self) -> None:
        with self._move_pool_lock:
            pool, self._move_pool = self._move_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._raw_client.close()
