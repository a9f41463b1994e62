"""Malformed bus messages: verdicts for the gateway (``platform.upload.validation``),
announcements for a validator (``platform.upload.<service>``) and asset-transfer events
for the bundler (``platform.asset-transfer``). ``real_id`` is the request id of an upload
that exists, so that bad values meet the code paths past the lookup. None of these is a
valid final verdict for ``real_id``."""
from __future__ import annotations

import json
from typing import Iterator

Named = tuple[str, bytes]


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


def _common() -> Iterator[Named]:
    yield "empty", b""
    yield "null", b"null"
    yield "array", b"[1, 2]"
    yield "string", b"\"text\""
    yield "number", b"42"
    yield "truncated", b"{\"request_id\": \"a"
    yield "invalid-utf8", b"{\"request_id\": \"\xff\xfe\"}"
    yield "utf16", "{}".encode("utf-16")
    yield "binary", bytes(range(256))
    yield "deep-arrays", b"[" * 100_000 + b"]" * 100_000
    yield "deep-objects", b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000
    yield "huge", b"{\"pad\": \"" + b"x" * 2_000_000 + b"\"}"
    yield "nan", b"{\"request_id\": NaN}"
    yield "huge-int", b"{\"request_id\": " + b"9" * 100_000 + b"}"
    yield "lone-surrogate", b"{\"request_id\": \"\\ud800\"}"


def verdicts(real_id: str) -> Iterator[Named]:
    for name, raw in _common():
        yield f"verdict-{name}", raw
    bad: dict[str, object] = {
        "no-request-id": {"validation": "success"},
        "request-id-int": {"request_id": 5, "validation": "success"},
        "request-id-list": {"request_id": [real_id], "validation": "success"},
        "request-id-empty": {"request_id": "", "validation": "success"},
        "request-id-long": {"request_id": "r" * 65, "validation": "success"},
        "request-id-traversal": {"request_id": "../../etc/passwd", "validation": "success"},
        "unknown-request": {"request_id": "no-such-upload", "validation": "success"},
        "no-validation": {"request_id": real_id},
        "validation-null": {"request_id": real_id, "validation": None},
        "validation-maybe": {"request_id": real_id, "validation": "maybe"},
        "validation-upper": {"request_id": real_id, "validation": "SUCCESS"},
        "validation-list": {"request_id": real_id, "validation": ["success"]},
        "validation-dict": {"request_id": real_id, "validation": {"success": True}},
        "validation-int": {"request_id": real_id, "validation": 1},
        "validation-padded": {"request_id": real_id, "validation": " success "},
        "unknown-with-reason-object": {"request_id": "no-such", "validation": "failure",
                                       "reason": {"deep": [1, 2]}},
    }
    for name, value in bad.items():
        yield f"verdict-{name}", _j(value)


def announcements(real_id: str) -> Iterator[Named]:
    for name, raw in _common():
        yield f"announce-{name}", raw
    bad: dict[str, object] = {
        "no-url": {"request_id": "corpus-a1"},
        "no-request-id": {"url": "http://127.0.0.1:1/x"},
        "url-int": {"request_id": "corpus-a2", "url": 5},
        "url-list": {"request_id": "corpus-a3", "url": ["http://x"]},
        "request-id-int": {"request_id": 7, "url": "http://127.0.0.1:1/x"},
        "checksums-string": {"request_id": "corpus-a4", "url": "http://127.0.0.1:1/x",
                             "checksums": "abc"},
    }
    for name, value in bad.items():
        yield f"announce-{name}", _j(value)


def events(real_id: str) -> Iterator[Named]:
    for name, raw in _common():
        yield f"event-{name}", raw
    bad: dict[str, object] = {
        "no-type": {"file_name": "a.obj"},
        "unknown-type": {"type": "sdc_asset_transfer_nonsense"},
        "type-int": {"type": 3},
        "created-no-name": {"type": "sdc_asset_transfer_file_created"},
        "created-name-object": {"type": "sdc_asset_transfer_file_created", "file_name": {"a": 1},
                                "uncompressed_sha1_hash": "x"},
        "created-bad-hash": {"type": "sdc_asset_transfer_file_created", "file_name": "X_Step1.obj",
                             "uncompressed_sha1_hash": "not-a-hash" * 100},
        "created-traversal": {"type": "sdc_asset_transfer_file_created",
                              "file_name": "../../etc/passwd", "uncompressed_sha1_hash": "0" * 40},
        "uploaded-unknown": {"type": "sdc_asset_transfer_file_uploaded", "file_name": "nope.obj",
                             "uncompressed_sha1_hash": "1" * 40, "request_id": "no-such"},
        "complete-no-plan": {"type": "sdc_asset_transfer_uploads_complete"},
        "complete-plan-int": {"type": "sdc_asset_transfer_uploads_complete",
                              "treatment_plan_uuid": 12},
        "complete-plan-garbage": {"type": "sdc_asset_transfer_uploads_complete",
                                  "treatment_plan_uuid": "not-a-uuid\0"},
    }
    for name, value in bad.items():
        yield f"event-{name}", _j(value)
