"""areas/checksums.py's one pass with its hashing lanes: every checksum equals hashlib's,
the crc32c package's and the ETag S3 itself gives (moto) for multi-part objects whose part
size is not a multiple of the block read, on local disk and on S3; an error while reading
or hashing is raised, never a hang."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO, cast

import boto3
import crc32c
import pytest

from areas import checksums
from areas.checksums import checksum_stream, hash_stream
from core.settings import Settings
from storage import get_storage

MiB = 1024 * 1024
PART = 5 * MiB + 3  # neither a multiple of the block nor of 64 bytes


def reference(data: bytes, part_size: int) -> dict[str, str]:
    if part_size:
        md5s = [hashlib.md5(data[i:i + part_size]).digest()  # noqa: S324
                for i in range(0, max(len(data), 1), part_size)]
        etag = f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"  # noqa: S324
    else:
        etag = hashlib.md5(data).hexdigest()  # noqa: S324
    return {"sha1": hashlib.sha1(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),  # noqa: S324
            "crc32c": f"{crc32c.crc32c(data):08x}", "s3_etag": etag}


class Trickle(io.RawIOBase):
    """Short reads, as a socket gives them."""

    def __init__(self, data: bytes, most: int = 300_001) -> None:
        self.data, self.at, self.most = memoryview(data), 0, most

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = self.most if size is None or size < 0 else min(size, self.most)
        chunk = bytes(self.data[self.at:self.at + size])
        self.at += len(chunk)
        return chunk


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checksums, "BLOCK", 2 * MiB)  # several blocks a part, cut at its end


@pytest.mark.parametrize("size,part_size", [
    (0, 0), (0, PART), (1, PART), (PART, PART), (PART + 1, PART), (3 * PART + 7, PART),
    (7 * MiB + 5, 0)])
def test_checksums_equal_the_references(size: int, part_size: int) -> None:
    data = os.urandom(size)
    assert checksum_stream(cast(BinaryIO, Trickle(data)), part_size) == (reference(data, part_size), size)


def test_known_values() -> None:
    sums, size = checksum_stream(io.BytesIO(b"123456789"), 0)
    assert size == 9 and sums["crc32c"] == "e3069283"  # the CRC-32C check value
    assert sums["sha256"] == "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"
    assert sums["s3_etag"] == "25f9e794323b453885f5181f1b624d0b"


class Broken(io.RawIOBase):
    def __init__(self, good: int) -> None:
        self.good = good

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.good <= 0:
            raise ConnectionResetError("the storage went away")
        self.good -= 1
        return os.urandom(MiB)


def test_errors_are_raised_not_hung() -> None:
    with pytest.raises(ConnectionResetError):
        checksum_stream(cast(BinaryIO, Broken(good=20)), PART)

    def broken_feed(part: int, block: bytes) -> None:
        raise ValueError("a hash failed")
    with pytest.raises(ValueError, match="a hash failed"):  # the reading goes on, then raises
        hash_stream(cast(BinaryIO, Trickle(os.urandom(30 * MiB))), [broken_feed])


def test_on_local_disk(tmp_path: Path) -> None:
    storage = get_storage(Settings.from_env({"WORKDIR": str(tmp_path)}))
    data = os.urandom(2 * PART + 11)
    writer = storage.open_writer("quarantine", "k")
    writer.write(data)
    writer.commit()
    with storage.open_reader("quarantine", "k") as stream:
        assert checksum_stream(stream, PART) == (reference(data, PART), len(data))


@pytest.mark.s3
def test_on_s3_the_etag_is_s3s(s3_settings: Settings) -> None:
    storage = get_storage(s3_settings)
    client = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url)
    bucket = s3_settings.s3_quarantine
    data = os.urandom(3 * PART + 11)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    parts = [{"PartNumber": n, "ETag": client.upload_part(
        Bucket=bucket, Key="k", UploadId=upload, PartNumber=n,
        Body=data[(n - 1) * PART:n * PART])["ETag"]} for n in range(1, 5)]
    client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                     MultipartUpload={"Parts": parts})
    stream: BinaryIO
    with storage.open_reader("quarantine", "k") as stream:
        sums, size = checksum_stream(stream, PART)
    assert (sums, size) == (reference(data, PART), len(data))
    assert sums["s3_etag"] == client.head_object(Bucket=bucket, Key="k")["ETag"].strip('"')
    storage.close()
