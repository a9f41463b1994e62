"""Issue 6, item 11: tenant isolation. With an identity, the status and download endpoints
show only that org's uploads; signed URLs expire and cannot be re-targeted at another
object; nothing in quarantine is readable without a valid signature."""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from bus import get_bus
from core.settings import Settings
from tests.e2e import Gateway, messages_for
from tests.faults.tools import upload
from tests.helpers import identity

ORG_A = identity("acct-a", "org-a")
ORG_B = identity("acct-b", "org-b")
ACCOUNT_ONLY_A = identity("acct-a", None)
ACCOUNT_ONLY_B = identity("acct-b", None)


def get(url: str, ident: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"x-rh-identity": ident} if ident else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    # no validator: payloads stay in quarantine; short-lived signed URLs
    gw = Gateway({"WORKDIR": str(tmp_path / "work"), "URL_EXPIRY": "4"}, ["gateway"]).start()
    yield gw
    assert gw.stop() == 0


def announced_urls(gateway: Gateway, request_ids: set[str]) -> dict[str, str]:
    bus = get_bus(Settings.from_env(gateway.env))
    consumer = bus.consumer(f"isolation-{time.monotonic_ns()}", ["platform.upload.testareno"])
    try:
        return {m["request_id"]: m["url"] for m in messages_for(consumer, request_ids, 20)}
    finally:
        consumer.close()
        bus.close()


def test_status_and_download_show_only_the_identity_orgs_uploads(gateway: Gateway) -> None:
    a = upload(gateway.port, b"org a payload", headers={"x-rh-identity": ORG_A}).request_id
    b = upload(gateway.port, b"org b payload", headers={"x-rh-identity": ORG_B}).request_id
    anonymous = upload(gateway.port, b"no identity", headers={"x-rh-identity": ""})
    assert anonymous.status == 400  # an empty identity header is malformed, not anonymous
    assert a and b
    status = f"{gateway.base}/api/v1/uploads/"
    assert get(status + a, ORG_A)[0] == 200
    assert get(status + b, ORG_B)[0] == 200
    assert get(status + b, ORG_A)[0] == 404
    assert get(status + a, ORG_B)[0] == 404
    # an identity that names only an account sees only that account's uploads
    assert get(status + a, ACCOUNT_ONLY_A)[0] == 200
    assert get(status + a, ACCOUNT_ONLY_B)[0] == 404
    assert get(status + b, ACCOUNT_ONLY_A)[0] == 404
    # internal.org_id counts as the org
    internal_b = base64.b64encode(json.dumps(
        {"identity": {"internal": {"org_id": "org-b"}}}).encode()).decode()
    assert get(status + b, internal_b)[0] == 200
    assert get(status + a, internal_b)[0] == 404
    # the 404 for another org's upload says the same as for an unknown one
    hidden = json.loads(get(status + b, ORG_A)[1])
    unknown = json.loads(get(status + "no-such-upload", ORG_A)[1])
    assert hidden == {"error": "not_found", "message": f"no upload {b}"}
    assert unknown == {"error": "not_found", "message": "no upload no-such-upload"}

    urls = announced_urls(gateway, {a, b})
    assert get(urls[a])[0] == 200  # a validator: no identity, the signature is enough
    assert get(urls[a], ORG_A) == (200, b"org a payload")
    assert get(urls[a], ORG_B)[0] == 404
    assert get(urls[b], ACCOUNT_ONLY_A)[0] == 404
    assert get(urls[b], ORG_B) == (200, b"org b payload")


def test_identity_required_also_guards_status(tmp_path: Path) -> None:
    gw = Gateway({"WORKDIR": str(tmp_path / "work"), "IDENTITY_REQUIRED": "true"},
                 ["gateway"]).start()
    try:
        assert upload(gw.port, b"x", headers={"x-rh-identity": ""}).status == 400
        rid = upload(gw.port, b"x", headers={"x-rh-identity": ORG_A}).request_id
        assert get(f"{gw.base}/api/v1/uploads/{rid}")[0] == 401
        assert get(f"{gw.base}/api/v1/uploads/{rid}", ORG_A)[0] == 200
    finally:
        assert gw.stop() == 0


def retarget(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = parts.path
    if "key" in changes:
        path = path.rsplit("/", 1)[0] + "/" + changes.pop("key")
    if "bucket" in changes:
        prefix, _, key = path.rsplit("/", 2)
        path = f"{prefix}/{changes.pop('bucket')}/{key}"
    query.update(changes)
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(query)}"


def test_signed_urls_expire_and_cannot_be_retargeted(gateway: Gateway) -> None:
    first = upload(gateway.port, b"first object").request_id
    second = upload(gateway.port, b"second object").request_id
    assert first and second
    urls = announced_urls(gateway, {first, second})
    url1, url2 = urls[first], urls[second]
    assert get(url1) == (200, b"first object")
    key2 = urlsplit(url2).path.rsplit("/", 1)[1]
    sig1 = parse_qs(urlsplit(url1).query)["signature"][0]
    expires1 = parse_qs(urlsplit(url1).query)["expires"][0]
    forged = {
        "other key": retarget(url1, key=key2),
        "other bucket": retarget(url1, bucket="perm"),
        "unknown bucket": retarget(url1, bucket="secrets"),
        "later expiry": retarget(url1, expires=str(int(expires1) + 3600)),
        "signature of another object": retarget(url2, signature=sig1),
        "uppercase signature": retarget(url1, signature=sig1.upper()),
        "truncated signature": retarget(url1, signature=sig1[:32]),
        "empty signature": retarget(url1, signature=""),
        "no signature": url1.split("?")[0] + f"?expires={expires1}",
        "no query": url1.split("?")[0],
        "traversal": retarget(url1, key="..%2Fgateway.sqlite"),
    }
    for name, url in forged.items():
        code, _ = get(url)
        assert code in (403, 404), (name, code)
    time.sleep(max(0.0, int(expires1) - time.time() + 1.5))
    assert get(url1)[0] == 403, "an expired URL still works"
    assert get(url2)[0] == 403


def test_nothing_in_quarantine_is_readable_without_a_signature(gateway: Gateway) -> None:
    rid = upload(gateway.port, b"secret payload").request_id
    settings = Settings.from_env(gateway.env)
    [key] = [p.name for p in (settings.workdir / settings.s3_quarantine).iterdir()
             if p.is_file()]
    base = gateway.base
    for path in (f"/api/v1/download/quarantine/{key}", f"/{settings.s3_quarantine}/{key}",
                 f"/api/v1/download/quarantine/{key}?expires=9999999999",
                 f"/api/v1/download/quarantine/{key}?signature=x&expires=9999999999",
                 f"/api/ingress/v1/download/quarantine/{key}", f"/api/v1/uploads/{rid}/download",
                 f"/api/v1/download/quarantine/../{settings.s3_quarantine}/{key}",
                 "/api/v1/download/quarantine/.incomplete", "/url-signing.key",
                 "/api/v1/download/quarantine/../url-signing.key?expires=9999999999&signature=x"):
        code, body = get(base + path)
        assert code in (403, 404), (path, code)
        assert b"secret payload" not in body
