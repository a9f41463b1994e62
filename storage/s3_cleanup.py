"""What a crashed writer left in S3, and how old objects are: the clean-up half of
``storage.s3.S3Storage`` (a mixin).

Ages are ``storage.object_age``: the smaller of what S3 reports, on S3's own clock (the
listing's ``Date`` header minus ``LastModified`` or ``Initiated``), and what the object key
tells. moto answers a fixed 2010 date for every multipart upload's ``Initiated``; the key
then keeps a live upload young. Multipart uploads under ``resumable/`` (tus) and ``areas/`` (upload
areas' direct uploads) are their owner's and left alone.
"""
from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from storage import object_age, owned

logger = logging.getLogger(__name__)


def _backend_now(page: dict[str, Any]) -> float:
    """S3's clock at the listing (its Date header), else ours."""
    date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()


class S3Cleanup:
    _client: Any
    _names: dict[str, str]
    _tail_prefix: str

    def list_aged(self, bucket: str) -> Iterator[tuple[str, float]]:
        from storage.s3 import _translate

        paginator = self._client.get_paginator("list_objects_v2")
        with _translate(f"bucket {bucket}"):
            for page in paginator.paginate(Bucket=self._name(bucket)):  # type: ignore[attr-defined]
                now = _backend_now(page)
                for item in page.get("Contents", ()):
                    if not item["Key"].startswith(self._tail_prefix):
                        age = now - item["LastModified"].timestamp()
                        yield item["Key"], object_age(item["Key"], age)

    def cleanup_incomplete(self, min_age: float) -> int:
        from storage.s3 import _translate

        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        for name in dict.fromkeys(self._names.values()):
            with _translate(f"bucket {name}"):
                for page in paginator.paginate(Bucket=name):
                    now = _backend_now(page)
                    for upload in page.get("Uploads", ()):
                        key = upload["Key"]
                        if owned(key):
                            continue  # a resumable upload's or an area's: its owner's
                        age = object_age(key, now - upload["Initiated"].timestamp())
                        if age > min_age:
                            removed += self._abort_upload(name, key, upload["UploadId"])
        if removed:
            logger.info("aborted %d incomplete multipart upload(s)", removed)
        return removed

    def _abort_upload(self, name: str, key: str, upload_id: str) -> int:
        try:
            self._client.abort_multipart_upload(Bucket=name, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return 0
            raise
        return 1
