"""A boto3 S3 client that creates one of the gateway's buckets again when a call finds it
missing (``NoSuchBucket``), then repeats the call once.

An S3 server that lost its state (a non-persistent MinIO or moto restarted, a bucket
deleted by hand) otherwise left the gateway answering 503 until it was restarted, because
buckets were created only at start-up. What the lost bucket held is gone either way: a
read after the bucket is back finds no object (``FileNotFoundError``). Only the configured
bucket names are ever created; any other call and error passes through unchanged.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Collection

from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)


class BucketKeepingClient:
    def __init__(self, client: Any, names: Collection[str],
                 ensure_bucket: Callable[[str], None]) -> None:
        self._client = client
        self._names = frozenset(names)
        self._ensure_bucket = ensure_bucket

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except ClientError as exc:
                bucket = kwargs.get("Bucket")
                code = exc.response.get("Error", {}).get("Code")
                if code != "NoSuchBucket" or bucket not in self._names:
                    raise
            logger.warning("bucket %s is missing; creating it again", bucket)
            self._ensure_bucket(bucket)
            body: Any = kwargs.get("Body")
            if body is not None and hasattr(body, "seek"):
                body.seek(0)  # a stream the first attempt read
            return attr(*args, **kwargs)

        return call
