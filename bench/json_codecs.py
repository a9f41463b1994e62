"""Issue 14 "orjson for the messages": the JSON work one small upload makes in role
``gateway`` (the announcement and three status messages encoded for the outbox, the
announcement parsed again by the relay for its Kafka headers, the 202 body, the metadata
column), timed with the standard library's ``json`` and with orjson, side by side.

    pip install orjson && python bench/json_codecs.py

The figure to compare it with is the CPU per upload that ``small_uploads.py`` prints.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import timeit
from typing import Any, Callable

from common import banner

try:
    import orjson
except ImportError:
    sys.exit("needs orjson: pip install orjson (not a dependency of the gateway)")

NOW = dt.datetime.now(dt.UTC).isoformat()
ANNOUNCEMENT: dict[str, Any] = {
    "account": "1", "org_id": "o1", "category": "thing", "service": "testareno",
    "content_type": "application/vnd.redhat.testareno.thing+tgz", "request_id": "a" * 32,
    "payload_id": "a" * 32, "principal": "p", "size": 10000, "timestamp": NOW,
    "url": "http://127.0.0.1:8080/api/v1/download/quarantine/" + "b" * 32
           + "?expires=1764567890&signature=" + "c" * 64,
    "b64_identity": "e" * 300, "metadata": {}, "checksums": {"sha256": "d" * 64},
    "filename": "payload.tgz", "mime": "application/gzip",
    "traceparent": "00-" + "f" * 32 + "-" + "1" * 16 + "-01",
}
STATUS = {"service": "testareno", "request_id": "a" * 32, "status": "stored",
          "status_msg": "stored in quarantine", "account": "1", "org_id": "o1", "date": NOW}
RESPONSE = {"request_id": "a" * 32, "upload": {"account": "1", "org_id": "o1"}}


def micros(call: Callable[[], object], number: int = 20000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def per_upload(dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> float:
    raw = json.dumps(ANNOUNCEMENT).encode()
    return (micros(lambda: dumps(ANNOUNCEMENT)) + 3 * micros(lambda: dumps(STATUS))
            + micros(lambda: loads(raw)) + micros(lambda: dumps(RESPONSE))
            + micros(lambda: dumps({})))


def main() -> None:
    banner("json against orjson, the messages of one small upload (role gateway)")
    stdlib = per_upload(lambda v: json.dumps(v, separators=(",", ":")).encode(), json.loads)
    fast = per_upload(orjson.dumps, orjson.loads)
    print(f"json    {stdlib:6.1f} us per upload")
    print(f"orjson  {fast:6.1f} us per upload  (saves {stdlib - fast:.1f} us; compare with the "
          "CPU per upload small_uploads.py prints)")


if __name__ == "__main__":
    main()
