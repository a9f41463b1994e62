"""Direct uploads on S3 (moto in server mode): the direct-upload contract through boto3's
presigned UploadPart URLs, and object tags."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.settings import Settings
from storage.direct import object_tags
from storage.s3 import S3Storage
from tests.contracts.direct_contract import BUCKET, DirectContract, new_key
from tests.contracts.storage_contract import put

pytestmark = pytest.mark.s3


@pytest.fixture
def storage(s3_settings: Settings) -> Iterator[S3Storage]:
    driver = S3Storage(s3_settings)
    yield driver
    driver.close()


class TestS3Direct(DirectContract):
    late_part_codes = (404, 500)  # moto answers 500 (a KeyError) where S3 says NoSuchUpload


def test_tags_follow_the_object(storage: S3Storage, s3_settings: Settings) -> None:
    assert object_tags(storage) is storage
    key = new_key()
    put(storage, BUCKET, key, b"tagged")
    storage.tag_object(BUCKET, key, {"sha256": "ab" * 32, "crc32c": "0a0b0c0d"})
    storage.move(BUCKET, "perm", key)
    tags = storage.client.get_object_tagging(Bucket=s3_settings.s3_perm, Key=key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"sha256": "ab" * 32, "crc32c": "0a0b0c0d"}
    with pytest.raises(FileNotFoundError):
        storage.tag_object(BUCKET, key, {"sha256": "00"})
