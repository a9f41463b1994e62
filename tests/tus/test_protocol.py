"""The tus endpoint against hostile and odd requests: every refusal is a clear 4xx with a
JSON ``{error, message}`` (never a 5xx), and the protocol's answers per the 1.0.0 text."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.e2e import Gateway
from tests.helpers import identity
from tests.tus.client import CONTENT_TYPE, Tus, metadata
from tests.tus.conftest import MAX_LENGTH
from tests.tus.stored import status, wait_available


def refused(answer, status: int, code: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert answer.status == status, (answer.status, answer.body)
    if code is not None:
        assert answer.json()["error"] == code, answer.body


def test_options_advertises_the_server(tus: Tus) -> None:
    answer = tus.request("OPTIONS", tus.prefix, {"Tus-Resumable": None})
    assert answer.status == 204
    assert answer.header("Tus-Version") == "1.0.0"
    assert set(answer.header("Tus-Extension").split(",")) == {
        "creation", "creation-with-upload", "creation-defer-length", "termination",
        "expiration", "checksum", "concatenation"}
    assert answer.header("Tus-Max-Size") == str(MAX_LENGTH)
    assert set(answer.header("Tus-Checksum-Algorithm").split(",")) == {"sha1", "sha256", "md5"}


def test_creation_head_patch_complete(gateway: Gateway, tus: Tus) -> None:
    data = os.urandom(300_000)
    answer = tus.create(len(data), headers={"x-rh-insights-request-id": "tus-flow-1"})
    assert answer.status == 201
    assert answer.header("Location").startswith(gateway.base + "/api/v1/tus/")
    assert answer.header("x-rh-insights-request-id") == "tus-flow-1"
    assert answer.header("Upload-Expires").endswith("GMT")
    assert status(gateway, "tus-flow-1")["status"] == "created"  # in the status API at once
    path = tus.path(answer.header("Location"))
    head = tus.head(path)
    assert head.status == 200 and head.header("Upload-Offset") == "0"
    assert head.header("Upload-Length") == str(len(data))
    assert head.header("Cache-Control") == "no-store"
    assert head.header("Upload-Metadata") == metadata(filetype=CONTENT_TYPE, filename="p.tgz")
    first = tus.patch(path, 0, data[:100_000])
    assert first.status == 204 and first.header("Upload-Offset") == "100000"
    assert first.header("Upload-Expires")
    assert status(gateway, "tus-flow-1")["status"] == "receiving"
    refused(tus.patch(path, 0, data[:10]), 409, "offset_mismatch")
    last = tus.patch(path, 100_000, data[100_000:])
    assert last.status == 204 and last.header("Upload-Offset") == str(len(data))
    final = wait_available(gateway, "tus-flow-1")
    assert [e["status"] for e in final["timeline"]][:4] == [
        "created", "receiving", "stored", "announced"]
    # after completion: PATCH is refused, HEAD still answers
    refused(tus.patch(path, len(data), b"x"), 403, "upload_finished")
    refused(tus.patch(path, 0, b"x"), 403, "upload_finished")
    assert tus.offset(path) == len(data)
    refused(tus.request("DELETE", path), 403, "upload_finished")
    # the same request id again
    refused(tus.create(10, headers={"x-rh-insights-request-id": "tus-flow-1"}), 409,
            "duplicate_request_id")


def test_also_under_the_ingress_prefix(tus: Tus) -> None:
    answer = tus.request("POST", "/api/ingress/v1/tus/", {
        "Upload-Length": "3", "Upload-Metadata": metadata(filetype=CONTENT_TYPE),
        "Content-Type": "application/offset+octet-stream"}, b"abc")
    assert answer.status == 201 and answer.header("Upload-Offset") == "3"
    assert "/api/ingress/v1/tus/" in answer.header("Location")


@pytest.mark.parametrize("headers,status,code", [
    ({"Tus-Resumable": "0.2.2"}, 412, "unsupported_version"),
    ({"Tus-Resumable": None}, 412, "unsupported_version"),
    ({"Upload-Length": "-1"}, 400, "bad_header"),
    ({"Upload-Length": "12abc"}, 400, "bad_header"),
    ({"Upload-Length": "1e9"}, 400, "bad_header"),
    ({"Upload-Length": "99999999999999999999999"}, 400, "bad_header"),
    ({"Upload-Length": str(MAX_LENGTH + 1)}, 413, "upload_too_large"),
    ({"Upload-Length": None}, 400, "bad_header"),
    ({"Upload-Length": None, "Upload-Defer-Length": "2"}, 400, "bad_header"),
    ({"Upload-Defer-Length": "1"}, 400, "bad_header"),  # both
    ({"Upload-Metadata": "filetype !!!notbase64"}, 400, "bad_header"),
    ({"Upload-Metadata": "a YQ==,a YQ=="}, 400, "bad_header"),
    ({"Upload-Metadata": "a b c"}, 400, "bad_header"),
    ({"Upload-Metadata": metadata(filetype="text/plain")}, 415, "unsupported_media_type"),
    ({"Upload-Metadata": metadata(filetype="application/vnd.redhat.nope.x")}, 415,
     "unsupported_service"),
    ({"Upload-Metadata": ""}, 415, "unsupported_media_type"),
    ({"x-rh-identity": "not base64!"}, 400, "malformed_identity"),
    ({"Upload-Concat": "sideways"}, 400, "bad_header"),
    ({"Upload-Concat": "final;"}, 400, "bad_header"),
    ({"Upload-Concat": "final;/api/v1/tus/" + "0" * 32}, 400, "bad_header"),  # + length
    ({"Upload-Concat": "final;/elsewhere/x", "Upload-Length": None}, 400, "bad_header"),
    ({"Upload-Concat": "final;/api/v1/tus/" + "0" * 32, "Upload-Length": None}, 400,
     "partial_not_complete"),
])
def test_bad_creations(tus: Tus, headers: dict, status: int, code: str) -> None:  # type: ignore[type-arg]
    sent = {"Upload-Length": "10", "Upload-Metadata": metadata(filetype=CONTENT_TYPE)}
    sent.update(headers)
    refused(tus.request("POST", tus.prefix, sent), status, code)


def test_creation_with_upload_body_past_the_length(tus: Tus) -> None:
    refused(tus.create(4, body=b"too long"), 413, "upload_too_large")


@pytest.mark.parametrize("headers,status,code", [
    ({"Upload-Offset": "-5"}, 400, "bad_header"),
    ({"Upload-Offset": "abc"}, 400, "bad_header"),
    ({"Upload-Offset": None}, 400, "bad_header"),
    ({"Upload-Offset": "7"}, 409, "offset_mismatch"),
    ({"Upload-Offset": "99999999999"}, 409, "offset_mismatch"),
    ({"Content-Type": "application/octet-stream"}, 415, "unsupported_media_type"),
    ({"Upload-Checksum": "crc32 AAAAAA=="}, 400, "bad_checksum_algorithm"),
    ({"Upload-Checksum": "sha1 ***"}, 400, "bad_header"),
    ({"Upload-Checksum": "sha1 AAAA"}, 400, "bad_header"),
    ({"Upload-Length": "11"}, 400, "bad_header"),
    ({"Tus-Resumable": "2.0.0"}, 412, "unsupported_version"),
])
def test_bad_patches(tus: Tus, headers: dict, status: int, code: str) -> None:  # type: ignore[type-arg]
    path = tus.new(10)
    sent = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    sent.update(headers)
    refused(tus.request("PATCH", path, sent, b"abc"), status, code)
    assert tus.offset(path) == 0


def test_offsets_and_bodies_past_the_length(tus: Tus) -> None:
    path = tus.new(10)
    refused(tus.patch(path, 0, b"x" * 11), 413, "upload_too_large")
    assert tus.patch(path, 0, b"x" * 6).status == 204
    refused(tus.patch(path, 6, b"x" * 5), 413, "upload_too_large")
    refused(tus.patch(path, 11, b"x"), 409, "offset_mismatch")
    assert tus.offset(path) == 6


def test_unknown_and_malformed_upload_urls(tus: Tus) -> None:
    refused(tus.head("/api/v1/tus/" + "0" * 32), 404)
    refused(tus.patch("/api/v1/tus/" + "0" * 32, 0, b"x"), 404, "not_found")
    assert tus.request("PATCH", "/api/v1/tus/../../etc", {}).status == 404


def test_another_org_gets_404(tus: Tus) -> None:
    path = tus.new(10)
    other = Tus(tus.base, identity(account="999", org_id="other-org"))
    refused(other.head(path), 404)
    refused(other.patch(path, 0, b"x"), 404, "not_found")
    refused(other.request("DELETE", path), 404, "not_found")
    nobody = Tus(tus.base, None)
    refused(nobody.patch(path, 0, b"x"), 404, "not_found")
    same_org = Tus(tus.base, identity(account="123", org_id="org1"))
    assert same_org.patch(path, 0, b"x").status == 204


def test_termination(tus: Tus) -> None:
    path = tus.new(100)
    assert tus.patch(path, 0, b"x" * 10).status == 204
    assert tus.request("DELETE", path).status == 204
    refused(tus.head(path), 410)
    refused(tus.patch(path, 10, b"x"), 410, "upload_gone")
    refused(tus.request("DELETE", path), 410, "upload_gone")


def test_deferred_length(gateway: Gateway, tus: Tus) -> None:
    answer = tus.create(None, headers={"Upload-Defer-Length": "1"})
    path = tus.path(answer.header("Location"))
    assert tus.head(path).header("Upload-Defer-Length") == "1"
    assert tus.patch(path, 0, b"a" * 1000).status == 204
    refused(tus.patch(path, 1000, b"b", {"Upload-Length": "500"}), 400, "bad_header")
    refused(tus.patch(path, 1000, b"b", {"Upload-Length": str(MAX_LENGTH + 1)}), 413)
    done = tus.patch(path, 1000, b"b" * 24, {"Upload-Length": "1024"})
    assert done.status == 204 and done.header("Upload-Offset") == "1024"
    head = tus.head(path)
    assert head.header("Upload-Length") == "1024" and head.header("Upload-Defer-Length") is None
    wait_available(gateway, head.header("x-rh-insights-request-id"))


def test_empty_upload(gateway: Gateway, tus: Tus) -> None:
    answer = tus.create(0)
    assert answer.status == 201
    wait_available(gateway, answer.header("x-rh-insights-request-id"))


def test_method_override(tus: Tus) -> None:
    path = tus.new(3)
    answer = tus.request("POST", path, {"X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0",
                                        "Content-Type": "application/offset+octet-stream"}, b"abc")
    assert answer.status == 204 and answer.header("Upload-Offset") == "3"


def test_cors(tus: Tus) -> None:
    preflight = tus.request("OPTIONS", tus.prefix, {
        "Origin": "http://app.example", "Access-Control-Request-Method": "PATCH",
        "Tus-Resumable": None})
    assert preflight.status == 204
    assert preflight.header("Access-Control-Allow-Origin") == "http://app.example"
    assert "Upload-Offset" in preflight.header("Access-Control-Allow-Headers")
    assert "PATCH" in preflight.header("Access-Control-Allow-Methods")
    created = tus.create(5, headers={"Origin": "http://app.example"})
    exposed = created.header("Access-Control-Expose-Headers")
    for name in ("Location", "Upload-Offset", "x-rh-insights-request-id", "Tus-Resumable"):
        assert name in exposed
    foreign = tus.create(5, headers={"Origin": "http://evil.example"})
    assert foreign.header("Access-Control-Allow-Origin") is None


def test_concurrent_patches_are_serialised(gateway: Gateway, tus: Tus) -> None:
    """A PATCH that holds the upload (its body trickling in) makes a second one wait, then
    get 423; the first one ends normally."""
    path = tus.new(2_000_000)
    body = os.urandom(2_000_000)
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"x-rh-identity: {tus.ident}\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body[:1000])
    time.sleep(0.5)
    started = time.monotonic()
    second = tus.patch(path, 0, body)
    refused(second, 423, "upload_locked")
    assert time.monotonic() - started >= 1.5  # it waited for the lease first
    sock.sendall(body[1000:])
    answer = sock.recv(4096).decode()
    sock.close()
    assert answer.startswith("HTTP/1.1 204"), answer
    assert tus.offset(path) == len(body)


def test_concatenation_of_10000_parts_is_refused(tus: Tus) -> None:
    urls = " ".join(f"/api/v1/tus/{i:032x}" for i in range(10_000))
    answer = tus.request("POST", tus.prefix, {
        "Upload-Concat": "final;" + urls, "Upload-Metadata": metadata(filetype=CONTENT_TYPE)})
    refused(answer, 400, "bad_header")
    assert "at most 1000" in answer.json()["message"]


def test_concatenation(gateway: Gateway, tus: Tus) -> None:
    pieces = [os.urandom(n) for n in (700_000, 1, 1_300_000)]
    paths = []
    for piece in pieces:
        answer = tus.request("POST", tus.prefix, {
            "Upload-Length": str(len(piece)), "Upload-Concat": "partial"})
        assert answer.status == 201 and answer.header("x-rh-insights-request-id") is None
        path = tus.path(answer.header("Location"))
        assert tus.patch(path, 0, piece).status == 204
        assert tus.head(path).header("Upload-Concat") == "partial"
        paths.append(path)
    refused(tus.patch(paths[0], len(pieces[0]), b"x"), 403, "upload_finished")
    header = "final;" + " ".join([gateway.base + paths[0], *paths[1:]])
    answer = tus.request("POST", tus.prefix, {
        "Upload-Concat": header, "x-rh-insights-request-id": "tus-concat-1",
        "Upload-Metadata": metadata(filetype=CONTENT_TYPE, filename="joined.tgz")})
    assert answer.status == 201, answer.body
    final = tus.path(answer.header("Location"))
    head = tus.head(final)
    assert head.header("Upload-Offset") == head.header("Upload-Length") == str(
        sum(map(len, pieces)))
    assert head.header("Upload-Concat") == header
    refused(tus.patch(final, 0, b"x"), 403, "final_upload")
    joined = wait_available(gateway, "tus-concat-1")
    import hashlib
    assert joined["checksums"]["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    refused(tus.head(paths[0]), 410)  # partials are removed once concatenated


def test_concatenation_needs_complete_partials(tus: Tus) -> None:
    answer = tus.request("POST", tus.prefix, {"Upload-Length": "10", "Upload-Concat": "partial"})
    path = tus.path(answer.header("Location"))
    single = tus.new(5)
    for named in (path, single):
        refused(tus.request("POST", tus.prefix, {
            "Upload-Concat": f"final;{named}",
            "Upload-Metadata": metadata(filetype=CONTENT_TYPE)}), 400, "partial_not_complete")
    other = Tus(tus.base, identity(account="9", org_id="other"))
    tus.patch(path, 0, b"x" * 10)
    refused(other.request("POST", tus.prefix, {
        "Upload-Concat": f"final;{path}",
        "Upload-Metadata": metadata(filetype=CONTENT_TYPE)}), 400, "partial_not_complete")


def test_parallel_creations_do_not_collide(tus: Tus) -> None:
    results: list[int] = []

    def one() -> None:
        results.append(tus.create(1, body=b"x").status)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 20
