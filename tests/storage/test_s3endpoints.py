"""storage.s3endpoints: the S3 client resolves an endpoint per bucket, not per object, and
every request and presigned URL is the one the unmodified client makes (no server: the
requests are caught before they are sent)."""
from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from storage.s3endpoints import _ParameterDroppingProvider, cache_endpoints, unused_parameters

CONFIGS = [  # (endpoint_url, region, addressing style)
    ("http://127.0.0.1:9000", "us-east-1", None),  # an S3-compatible server: path style
    (None, "us-east-1", None),  # AWS: virtual-hosted style
    (None, "eu-west-1", None),
    (None, "eu-west-1", "path"),
]
BUCKETS = ["upload-perm", "upload-quarantine", "dotted.bucket.name"]


def client(endpoint: str | None, region: str, style: str | None) -> Any:
    session = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s")
    config = Config(region_name=region, signature_version="s3v4",
                    s3={"addressing_style": style} if style else {})
    return session.client("s3", endpoint_url=endpoint, config=config)


def requests_made(s3: Any) -> list[tuple[str, str, dict[str, str]]]:
    """What each call would send (method, URL, headers but the signature's), and the
    presigned URLs; nothing is sent."""
    sent: list[tuple[str, str, dict[str, str]]] = []

    def catch(request: Any, **_: Any) -> AWSResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("authorization", "x-amz-date", "amz-sdk-invocation-id",
                                        "user-agent", "amz-sdk-request")}
        sent.append((request.method, request.url, headers))
        return AWSResponse(request.url, 200, {}, _Raw())

    s3.meta.events.register("before-send.s3", catch)
    for bucket in BUCKETS:
        for key in ("a/b", "c d/é.tgz", "x" * 300):
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
            s3.copy_object(Bucket=bucket, Key=key + "2", CopySource={"Bucket": bucket, "Key": key})
            s3.head_object(Bucket=bucket, Key=key)
            url = s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key,
                                      "ResponseContentDisposition": "attachment"}, ExpiresIn=60)
            sent.append(("presigned", url.split("X-Amz-Date=")[0], {}))
        s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    return sent


class _Raw:
    def stream(self, **_: Any) -> Any:
        yield b""


@pytest.mark.parametrize(("endpoint", "region", "style"), CONFIGS)
def test_the_same_requests_as_the_plain_client(endpoint: str | None, region: str,
                                               style: str | None) -> None:
    plain, cached = client(endpoint, region, style), client(endpoint, region, style)
    assert {"Key", "CopySource", "Prefix"} <= cache_endpoints(cached)
    assert requests_made(cached) == requests_made(plain)


def test_rules_are_evaluated_once_per_bucket() -> None:
    s3 = client("http://127.0.0.1:9000", "us-east-1", None)
    cache_endpoints(s3)
    provider = s3._ruleset_resolver._provider
    assert isinstance(provider, _ParameterDroppingProvider)
    resolve = type(provider._provider).resolve_endpoint
    requests_made(s3)  # warms the cache with each bucket and operation
    before = resolve.cache_info()
    requests_made(s3)
    after = resolve.cache_info()
    assert after.misses == before.misses  # new keys, the same endpoints: all hits
    assert after.hits > before.hits


def test_a_parameter_a_rule_mentions_is_kept() -> None:
    ruleset = {"parameters": {"Bucket": {}, "Key": {}, "Region": {}},
               "rules": [{"conditions": [{"fn": "isSet", "argv": [{"ref": "Bucket"}]}],
                          "endpoint": {"url": "https://s3.{Region}.example"}}]}
    assert unused_parameters(ruleset) == {"Key"}
