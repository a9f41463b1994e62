"""Direct uploads on S3: the ``DirectUploads``, ``PrefixListing`` and ``ObjectTags``
capabilities of the s3 driver (storage/direct.py).

A direct upload is an S3 multipart upload on its final key (``CreateMultipartUpload``);
each part URL is a presigned ``UploadPart`` URL (SigV4, at most 7 days), which the client
PUTs to with any HTTP client; S3 answers each with the part's ``ETag``.
``complete_direct`` is ``CompleteMultipartUpload`` (S3 checks the ETags and the 5 MiB
minimum: ``InvalidPart``, ``InvalidPartOrder``, ``EntityTooSmall`` become
``PartsRefused``); ``direct_parts`` is ``ListParts``. A presigned URL cannot bound a part's
size: the caller checks the listed sizes before completing.

Tags: ``PutObjectTagging`` (at most 10, keys up to 128 and values up to 256 characters);
``CopyObject`` keeps them, so a move to another bucket does too.
"""
from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

from botocore.exceptions import ClientError

from storage.direct import (
    DirectUploads,
    ObjectTags,
    PartsRefused,
    PrefixListing,
    StoredPart,
    check_part_order,
    plain_etag,
)

REFUSED_CODES = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall",
                           "MalformedXML", "InvalidRequest"})
MAX_URL_EXPIRY = 7 * 24 * 3600


class S3Direct(DirectUploads, PrefixListing, ObjectTags):
    """Mixin of ``S3Storage``, whose client, bucket names and error translation it uses."""

    _client: Any
    _name: Callable[[str], str]

    def start_direct(self, bucket: str, key: str) -> dict[str, Any]:
        from storage.s3 import _translate

        with _translate(f"{bucket}/{key}"):
            created = self._client.create_multipart_upload(Bucket=self._name(bucket), Key=key)
        return {"upload_id": created["UploadId"]}

    def direct_part_url(self, bucket: str, key: str, state: dict[str, Any], number: int,
                        max_size: int, expires_in: int) -> str:
        params = {"Bucket": self._name(bucket), "Key": key, "UploadId": state["upload_id"],
                  "PartNumber": number}
        return cast(str, self._client.generate_presigned_url(
            "upload_part", Params=params, ExpiresIn=min(expires_in, MAX_URL_EXPIRY)))

    def direct_parts(self, bucket: str, key: str, state: dict[str, Any]) -> list[StoredPart]:
        from storage.s3 import _code, _translate

        paginator = self._client.get_paginator("list_parts")
        parts: list[StoredPart] = []
        try:
            with _translate(f"{bucket}/{key}"):
                for page in paginator.paginate(Bucket=self._name(bucket), Key=key,
                                               UploadId=state["upload_id"]):
                    parts += [StoredPart(p["PartNumber"], p["ETag"], int(p["Size"]))
                              for p in page.get("Parts", ())]
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                raise FileNotFoundError(errno.ENOENT, "no such upload", key) from None
            raise
        return sorted(parts, key=lambda part: part.number)

    def complete_direct(self, bucket: str, key: str, state: dict[str, Any],
                        parts: Sequence[tuple[int, str]]) -> None:
        from storage.s3 import _code, _translate

        check_part_order(parts)
        name = self._name(bucket)
        listed = [{"PartNumber": number, "ETag": f'"{plain_etag(etag)}"'}
                  for number, etag in parts]
        try:
            with _translate(f"{bucket}/{key}"):
                self._client.complete_multipart_upload(
                    Bucket=name, Key=key, UploadId=state["upload_id"],
                    MultipartUpload={"Parts": listed})
        except ClientError as exc:
            code = _code(exc)
            if code in REFUSED_CODES:
                message = exc.response.get("Error", {}).get("Message") or code
                raise PartsRefused(f"{code}: {message}") from None
            raise
        except FileNotFoundError:  # NoSuchUpload: completed already (a retry), or never
            if not self.exists(bucket, key):  # type: ignore[attr-defined]
                raise

    def abort_direct(self, bucket: str, key: str, state: dict[str, Any]) -> None:
        from storage.s3 import _code, _translate

        try:
            with _translate(f"{bucket}/{key}"):
                self._client.abort_multipart_upload(Bucket=self._name(bucket), Key=key,
                                                    UploadId=state["upload_id"])
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise
        except FileNotFoundError:
            pass  # some servers answer 404 for an upload that is gone

    def list_direct(self, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, Any], float]]:
        from storage.s3 import _translate

        paginator = self._client.get_paginator("list_multipart_uploads")
        with _translate(f"bucket {bucket}"):
            for page in paginator.paginate(Bucket=self._name(bucket), Prefix=prefix):
                for upload in page.get("Uploads", ()):
                    yield (upload["Key"], {"upload_id": upload["UploadId"]},
                           upload["Initiated"].timestamp())

    def list_prefix(self, bucket: str, prefix: str) -> Iterator[str]:
        from storage.s3 import _translate

        paginator = self._client.get_paginator("list_objects_v2")
        with _translate(f"bucket {bucket}"):
            for page in paginator.paginate(Bucket=self._name(bucket), Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"]

    def tag_object(self, bucket: str, key: str, tags: Mapping[str, str]) -> None:
        from storage.s3 import _translate

        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        with _translate(f"{bucket}/{key}"):
            self._client.put_object_tagging(Bucket=self._name(bucket), Key=key,
                                            Tagging={"TagSet": tag_set})
