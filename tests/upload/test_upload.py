import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from auth.keys import create_key
from core.services import Services
from storage import StorageUnavailable
from tests.helpers import identity, multipart

UPLOAD = "/api/v1/upload"


def quarantine_files(services: Services) -> tuple[list[str], list[str]]:
    root = services.settings.workdir / services.settings.s3_quarantine
    incomplete = [p.name for p in (root / ".incomplete").iterdir()] if (root / ".incomplete").exists() else []
    return sorted(services.storage.list_keys("quarantine")), incomplete


async def post(http_client, base_url, body, content_type, headers=None, **kwargs):  # type: ignore[no-untyped-def]
    all_headers = {"Content-Type": content_type, **(headers or {})}
    try:
        return await http_client.fetch(base_url + UPLOAD, method="POST", body=body,
                                       headers=all_headers, raise_error=False, **kwargs)
    except HTTPClientError as exc:  # pragma: no cover - raise_error=False returns responses
        return exc.response


def error_code(response) -> str:  # type: ignore[no-untyped-def]
    return json.loads(response.body)["error"]


@pytest.mark.gen_test
async def test_upload_is_stored_recorded_and_announced(http_client, base_url, services):  # type: ignore[no-untyped-def]
    # hash-derived bytes: random-looking, and deterministic so that libmagic always calls
    # them application/octet-stream (about 1 in 80 os.urandom buffers look like zlib)
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(9375))
    body, ctype = multipart(data, metadata={"reporter": "test"})
    response = await post(http_client, base_url, body, ctype,
                          {"x-rh-identity": identity(), "x-rh-insights-request-id": "req-1"})
    assert response.code == 202, response.body
    answer = json.loads(response.body)
    assert answer == {"request_id": "req-1", "upload": {"account_number": "000001", "org_id": "org1"}}
    row = services.database.get_upload("req-1")
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["size"] == len(data) and row["service"] == "testareno" and row["category"] == "thing"
    assert row["mime"] == "application/octet-stream"
    with services.storage.open_reader("quarantine", row["object_key"]) as reader:
        assert reader.read() == data
    outbox = services.database.claim_outbox(10)
    announcement = json.loads(outbox[0].value)
    assert outbox[0].topic == "platform.upload.testareno" and outbox[0].key == "req-1"
    assert announcement["checksums"]["sha256"] == row["sha256"]
    assert announcement["metadata"] == {"reporter": "test"}
    assert announcement["payload_id"] == "req-1" and announcement["size"] == len(data)
    assert "signature=" in announcement["url"]


@pytest.mark.gen_test
async def test_ingress_prefix_and_upload_part_name(http_client, base_url, services):  # type: ignore[no-untyped-def]
    body, ctype = multipart(b"hello world\n", name="upload")
    response = await http_client.fetch(base_url + "/api/ingress/v1/upload", method="POST",
                                       body=body, headers={"Content-Type": ctype})
    assert response.code == 202
    row = services.database.get_upload(json.loads(response.body)["request_id"])
    assert row["mime"] == "text/plain" and row["account"] is None


@pytest.mark.gen_test
@pytest.mark.parametrize("data", [b"x", b""], ids=["one-byte", "empty"])
async def test_tiny_payloads(http_client, base_url, services, data):  # type: ignore[no-untyped-def]
    body, ctype = multipart(data)
    response = await post(http_client, base_url, body, ctype)
    assert response.code == 202
    row = services.database.get_upload(json.loads(response.body)["request_id"])
    assert row["size"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.gen_test
@pytest.mark.parametrize("piece", [1, 7, 41, 4096])
async def test_chunked_body_in_small_pieces(http_client, base_url, services, piece):  # type: ignore[no-untyped-def]
    """Chunked transfer encoding; chunk edges fall inside boundaries and part headers."""
    data = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"tail"
    body, ctype = multipart(data)

    async def producer(write):  # type: ignore[no-untyped-def]
        for start in range(0, len(body), piece):
            await write(body[start:start + piece])

    response = await http_client.fetch(base_url + UPLOAD, method="POST", body_producer=producer,
                                       headers={"Content-Type": ctype}, raise_error=False)
    assert response.code == 202, response.body
    row = services.database.get_upload(json.loads(response.body)["request_id"])
    assert row["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.gen_test
async def test_too_large_by_content_length(http_client, base_url, services):  # type: ignore[no-untyped-def]
    body, ctype = multipart(b"x" * (3 * 1024 * 1024))
    response = await post(http_client, base_url, body, ctype)
    assert response.code == 413 and error_code(response) == "upload_too_large"
    assert quarantine_files(services) == ([], [])


@pytest.mark.gen_test
async def test_too_large_mid_stream_removes_partial_data(http_client, base_url, services):  # type: ignore[no-untyped-def]
    body, ctype = multipart(b"y" * (1024 * 1024 + 10))  # just over MAX_LENGTH, under the envelope

    async def producer(write):  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 65536):
            await write(body[start:start + 65536])

    response = await http_client.fetch(base_url + UPLOAD, method="POST", body_producer=producer,
                                       headers={"Content-Type": ctype}, raise_error=False)
    assert response.code == 413 and error_code(response) == "upload_too_large"
    assert quarantine_files(services) == ([], [])
    assert services.database.outbox_depth() == 0


@pytest.mark.gen_test
@pytest.mark.parametrize("content_type,code", [
    ("application/vnd.redhat.unknown.thing+tgz", "unsupported_service"),
    ("application/octet-stream", "unsupported_media_type"),
])
async def test_unsupported_types(http_client, base_url, services, content_type, code):  # type: ignore[no-untyped-def]
    body, ctype = multipart(b"data", content_type=content_type)
    response = await post(http_client, base_url, body, ctype)
    assert response.code == 415 and error_code(response) == code
    assert quarantine_files(services) == ([], [])


@pytest.mark.gen_test
async def test_bad_requests(http_client, base_url, services):  # type: ignore[no-untyped-def]
    body, ctype = multipart(None, metadata={"a": 1})
    assert error_code(await post(http_client, base_url, body, ctype)) == "missing_file"
    body, ctype = multipart(b"data")
    truncated = body[: body.index(b"data") + 4]
    response = await post(http_client, base_url, truncated, ctype)
    assert response.code == 400 and error_code(response) == "malformed_multipart"
    response = await post(http_client, base_url, body, ctype, {"x-rh-identity": "%%%"})
    assert response.code == 400 and error_code(response) == "malformed_identity"
    body, ctype = multipart(b"data", metadata=b"{not json")
    response = await post(http_client, base_url, body, ctype)
    assert response.code == 400 and error_code(response) == "malformed_metadata"
    response = await post(http_client, base_url, b"plain", "text/plain")
    assert response.code == 415
    assert quarantine_files(services) == ([], [])


@pytest.mark.gen_test
async def test_storage_failure_is_503_and_leaves_nothing(http_client, base_url, services, monkeypatch):  # type: ignore[no-untyped-def]
    original = services.storage.open_writer

    def failing_writer(bucket, key):  # type: ignore[no-untyped-def]
        writer = original(bucket, key)

        def write(data):  # type: ignore[no-untyped-def]
            raise StorageUnavailable("disk full")

        writer.write = write
        return writer

    monkeypatch.setattr(services.storage, "open_writer", failing_writer)
    body, ctype = multipart(b"z" * 200_000)
    response = await post(http_client, base_url, body, ctype)
    assert response.code == 503 and error_code(response) == "storage_unavailable"
    assert quarantine_files(services) == ([], [])


@pytest.mark.gen_test
async def test_status_timeline_is_org_scoped(http_client, base_url, services):  # type: ignore[no-untyped-def]
    body, ctype = multipart(b"data")
    response = await post(http_client, base_url, body, ctype, {"x-rh-identity": identity(org_id="o1")})
    request_id = json.loads(response.body)["request_id"]
    url = f"{base_url}/api/v1/uploads/{request_id}"
    mine = {"x-rh-identity": identity(org_id="o1")}
    status = json.loads((await http_client.fetch(url, headers=mine)).body)
    assert status["status"] == "stored"
    assert [e["status"] for e in status["timeline"]] == ["received", "stored"]
    assert status["timeline"][0]["at"].endswith("+00:00")
    other = await http_client.fetch(url, headers={"x-rh-identity": identity(org_id="o2")},
                                    raise_error=False)
    assert other.code == 404 and error_code(other) == "not_found"
    missing = await http_client.fetch(f"{base_url}/api/v1/uploads/nope", raise_error=False)
    assert missing.code == 404


@pytest.mark.gen_test
async def test_status_without_identity_shows_only_uploads_made_without(  # type: ignore[no-untyped-def]
        http_client, base_url, services: Services) -> None:
    """Issue 11 item 5: with IDENTITY_REQUIRED=false (the default) a caller without an
    identity saw every upload; now only those made without one. An API key with the scope
    status (operators) sees any."""
    body, ctype = multipart(b"with an org")
    response = await post(http_client, base_url, body, ctype, {"x-rh-identity": identity(org_id="o1")})
    with_org = json.loads(response.body)["request_id"]
    body, ctype = multipart(b"without")
    anonymous = json.loads((await post(http_client, base_url, body, ctype)).body)["request_id"]
    url = f"{base_url}/api/v1/uploads/"
    hidden = await http_client.fetch(url + with_org, raise_error=False)
    assert hidden.code == 404 and error_code(hidden) == "not_found"
    assert (await http_client.fetch(url + anonymous)).code == 200
    # an identity does not see the identity-less one either (no org of its own)
    other = await http_client.fetch(url + anonymous, raise_error=False,
                                    headers={"x-rh-identity": identity(org_id="o1")})
    assert other.code == 404
    token = create_key(services.database.engine, "operator", ["status"])
    for request_id in (with_org, anonymous):
        seen = await http_client.fetch(url + request_id, headers={"Authorization": f"Bearer {token}"})
        assert json.loads(seen.body)["request_id"] == request_id
    wrong = create_key(services.database.engine, "not-status", ["admin"])
    assert (await http_client.fetch(url + with_org, raise_error=False,
                                    headers={"Authorization": f"Bearer {wrong}"})).code == 404


@pytest.mark.gen_test
async def test_service_endpoints(http_client, base_url):  # type: ignore[no-untyped-def]
    assert json.loads((await http_client.fetch(base_url + "/api/v1/version")).body)["version"]
    health = await http_client.fetch(base_url + "/api/v1/health")
    assert json.loads(health.body)["status"] == "ok"
    spec = json.loads((await http_client.fetch(base_url + "/api/v1/openapi.json")).body)
    assert "/api/v1/upload" in spec["paths"]
    metrics = (await http_client.fetch(base_url + "/metrics")).body.decode()
    assert "gateway_upload_requests_total" in metrics and "gateway_outbox_messages" in metrics
    live = await http_client.fetch(base_url + "/livez")
    assert json.loads(live.body) == {"status": "alive"}
    for _ in range(100):  # the first background checks take a moment
        ready = await http_client.fetch(base_url + "/readyz", raise_error=False)
        if ready.code == 200:
            break
        await asyncio.sleep(0.05)
    assert ready.code == 200 and json.loads(ready.body) == {"status": "ready", "down": []}
    nothing = await http_client.fetch(base_url + "/nope", raise_error=False)
    assert nothing.code == 404 and error_code(nothing) == "not_found"


@pytest.mark.gen_test
async def test_signed_download(http_client, base_url, services):  # type: ignore[no-untyped-def]
    body, ctype = multipart(b"secret bytes")
    await post(http_client, base_url, body, ctype)
    url = json.loads(services.database.claim_outbox(1)[0].value)["url"]
    assert (await http_client.fetch(url)).body == b"secret bytes"
    forged = url.replace("signature=", "signature=0")
    assert (await http_client.fetch(forged, raise_error=False)).code == 403
    key = Path(url.split("?")[0]).name
    retarget = url.replace(key, "0" * len(key))
    assert (await http_client.fetch(retarget, raise_error=False)).code == 403


@pytest.mark.gen_test
async def test_signed_download_sizes_around_the_small_object_limit(  # type: ignore[no-untyped-def]
        http_client, base_url, services):
    """Small objects are opened and read in one executor call; larger ones stream on."""
    from upload.api import COPY_BLOCK, SMALL_OBJECT
    for size in (0, 1, SMALL_OBJECT - 1, SMALL_OBJECT, SMALL_OBJECT + 1,
                 SMALL_OBJECT + COPY_BLOCK + 7, 3 * SMALL_OBJECT + 5):
        data = os.urandom(size)
        key = f"size-{size}"
        writer = services.storage.open_writer("quarantine", key)
        writer.write(data)
        writer.commit()
        url = services.storage.signed_url("quarantine", key, 60)
        response = await http_client.fetch(url)
        assert response.body == data, size


@pytest.mark.gen_test
async def test_a_method_not_served_gets_405_with_allow(http_client, base_url):  # type: ignore[no-untyped-def]
    """issue 13 item 7: GET /api/v1/upload answered 415."""
    for path in (UPLOAD, "/api/ingress/v1/upload"):
        response = await http_client.fetch(base_url + path, raise_error=False)
        assert response.code == 405 and response.headers["Allow"] == "POST", response.body
        assert error_code(response) == "method_not_allowed"
    version = await http_client.fetch(base_url + "/api/v1/version", method="DELETE",
                                      raise_error=False)
    assert version.code == 405 and version.headers["Allow"] == "GET"
    assert error_code(version) == "method_not_allowed"


@pytest.mark.gen_test
async def test_request_id_and_traceparent_are_carried_on(http_client, base_url, services):  # type: ignore[no-untyped-def]
    """X-Request-ID names the upload when x-rh-insights-request-id does not; a W3C
    traceparent travels in the announcement (and its Kafka header, core/relay.py)."""
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body, ctype = multipart(b"traced")
    response = await post(http_client, base_url, body, ctype,
                          {"X-Request-ID": "xreq-7", "traceparent": trace})
    assert response.code == 202 and json.loads(response.body)["request_id"] == "xreq-7"
    assert response.headers["X-Request-ID"] == "xreq-7"
    body, ctype = multipart(b"not traced")
    bad = await post(http_client, base_url, body, ctype, {"traceparent": "00-zz-yy-01"})
    assert bad.code == 202
    sent = {json.loads(r.value)["request_id"]: json.loads(r.value)
            for r in services.database.claim_outbox(10) if r.topic.startswith("platform.upload.")}
    assert sent["xreq-7"]["traceparent"] == trace
    assert "traceparent" not in sent[json.loads(bad.body)["request_id"]]


@pytest.mark.gen_test
async def test_connection_test_answers_200_and_stores_nothing(http_client, base_url, services):  # type: ignore[no-untyped-def]
    """insights-client --test-connection: a form field test=test (Insights ingress)."""
    for data in (b"ignored", None):  # with a file part, and without one
        body, ctype = multipart(data, extra_parts=[("test", b"test")])
        response = await post(http_client, base_url, body, ctype,
                              {"x-rh-identity": identity()})
        assert response.code == 200, response.body
        answer = json.loads(response.body)
        assert answer["upload"] == {"account_number": "000001", "org_id": "org1"}
        assert services.database.get_upload(answer["request_id"]) is None
    # the field after the file part: streamed, then removed
    body, ctype = multipart(b"ignored too")
    body = body.replace(b"--\r\n", b"\r\nContent-Disposition: form-data; name=\"test\"\r\n\r\n"
                        b"test\r\n--" + ctype.split("boundary=")[1].encode() + b"--\r\n")
    late = await post(http_client, base_url, body, ctype)
    assert late.code == 200, late.body
    assert services.database.claim_outbox(10) == []
    assert list(services.storage.list_keys("quarantine")) == []
