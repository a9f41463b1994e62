"""One-time callback URLs: a verdict posted to the announcement's ``callback_url`` is
recorded like a Kafka verdict; a used, expired or forged code gets 403 and changes nothing."""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from core.callbacks import CALLBACK_PREFIX, make_code
from core.services import Services
from core.verdicts import VerdictHandler
from storage import StorageUnavailable
from tests.helpers import identity, multipart


async def upload(http_client, base_url, services: Services, request_id: str) -> str:  # type: ignore[no-untyped-def]
    """Upload a payload; returns the path and query of its announcement's callback_url."""
    body, ctype = multipart(b"payload for " + request_id.encode())
    response = await http_client.fetch(
        base_url + "/api/v1/upload", method="POST", body=body,
        headers={"Content-Type": ctype, "x-rh-identity": identity(),
                 "x-rh-insights-request-id": request_id})
    assert response.code == 202
    rows = services.database.claim_outbox(100)
    [announcement] = [json.loads(r.value) for r in rows
                      if r.topic == "platform.upload.testareno" and r.key == request_id]
    url = urlsplit(announcement["callback_url"])
    assert url.path == f"{CALLBACK_PREFIX}/{request_id}" and url.query.startswith("code=")
    return f"{url.path}?{url.query}"


async def post(http_client, base_url, path: str, body):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await http_client.fetch(base_url + path, method="POST", body=raw,
                                       raise_error=False)
    return response.code, json.loads(response.body or b"{}")


def status(services: Services, request_id: str) -> str:
    return services.database.get_upload(request_id)["status"]  # type: ignore[index]


@pytest.mark.gen_test
async def test_success_once_then_forbidden(http_client, base_url, services):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-1")
    code, answer = await post(http_client, base_url, path, {"validation": "success", "id": "v9"})
    assert code == 200 and answer == {"request_id": "cb-1", "validation": "success",
                                      "status": "validated"}
    row = services.database.get_upload("cb-1")
    assert row["bucket"] == "perm" and json.loads(row["verdict"]) == {"id": "v9"}
    code, answer = await post(http_client, base_url, path, {"validation": "failure"})
    assert code == 403 and answer["error"] == "forbidden"
    assert status(services, "cb-1") == "validated"


@pytest.mark.gen_test
async def test_failure_records_the_reason(http_client, base_url, services):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-2")
    code, _ = await post(http_client, base_url, path, {"validation": "failure", "reason": "bad"})
    assert code == 200
    row = services.database.get_upload("cb-2")
    assert row["status"] == "rejected" and row["reason"] == "bad" and row["bucket"] == "reject"
    assert [e["message"] for e in services.database.timeline("cb-2")][-1] == "bad"


@pytest.mark.gen_test
async def test_forged_expired_and_foreign_codes(http_client, base_url, services):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-3")
    await upload(http_client, base_url, services, "cb-4")
    key = services.settings.url_signing_key
    forged = path[:-4] + ("0000" if not path.endswith("0000") else "1111")
    expired = f"{CALLBACK_PREFIX}/cb-3?code={make_code(key, 'cb-3', -10)}"
    foreign = f"{CALLBACK_PREFIX}/cb-4?{path.split('?')[1]}"  # cb-3's code on cb-4
    other_key = f"{CALLBACK_PREFIX}/cb-3?code={make_code(b'another key', 'cb-3', 60)}"
    for bad in (forged, expired, foreign, other_key, f"{CALLBACK_PREFIX}/cb-3",
                f"{CALLBACK_PREFIX}/cb-3?code=1.2"):
        code, answer = await post(http_client, base_url, bad, {"validation": "success"})
        assert (code, answer["error"]) == (403, "forbidden"), bad
    assert status(services, "cb-3") == "stored" and status(services, "cb-4") == "stored"
    code, _ = await post(http_client, base_url, path, {"validation": "success"})
    assert code == 200  # the genuine code was not used up by the attempts


@pytest.mark.gen_test
async def test_bad_bodies_unknown_upload_and_handoff(http_client, base_url, services):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-5")
    for body in (b"not json", [1], {"validation": "maybe"}, {}):
        code, answer = await post(http_client, base_url, path, body)
        assert (code, answer["error"]) == (400, "bad_request"), body
    code, _ = await post(http_client, base_url, path, {"validation": "handoff"})
    assert code == 200 and status(services, "cb-5") == "handed_off"
    code, answer = await post(http_client, base_url, path, {"validation": "success"})
    assert code == 200 and answer["status"] == "validated"  # handoff kept the code usable
    ghost = f"{CALLBACK_PREFIX}/ghost?code={make_code(services.settings.url_signing_key, 'ghost', 60)}"
    code, answer = await post(http_client, base_url, ghost, {"validation": "success"})
    assert (code, answer["error"]) == (404, "not_found")


@pytest.mark.gen_test
async def test_late_callback_after_a_kafka_verdict_changes_nothing(http_client, base_url, services):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-6")
    handler = VerdictHandler(services.settings, services.storage, services.database)
    handler({"request_id": "cb-6", "validation": "failure", "reason": "timeout"})
    code, answer = await post(http_client, base_url, path, {"validation": "success"})
    assert (code, answer["error"]) == (409, "already_decided")
    row = services.database.get_upload("cb-6")
    assert row["status"] == "rejected" and row["reason"] == "timeout"


@pytest.mark.gen_test
async def test_concurrent_posts_one_wins(http_client, base_url, services):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-7")
    results = await asyncio.gather(*(post(http_client, base_url, path, {"validation": v})
                                     for v in ("success", "failure", "success", "failure")))
    codes = sorted(code for code, _ in results)
    assert codes == [200, 403, 403, 403]
    [winner] = [answer for code, answer in results if code == 200]
    assert status(services, "cb-7") == winner["status"]


@pytest.mark.gen_test
async def test_storage_outage_releases_the_code(http_client, base_url, services, monkeypatch):  # type: ignore[no-untyped-def]
    path = await upload(http_client, base_url, services, "cb-8")

    def broken(*args):  # type: ignore[no-untyped-def]
        raise StorageUnavailable("down")
    monkeypatch.setattr(services.storage, "move", broken)
    code, answer = await post(http_client, base_url, path, {"validation": "success"})
    assert (code, answer["error"]) == (503, "service_unavailable")
    monkeypatch.undo()
    code, _ = await post(http_client, base_url, path, {"validation": "success"})
    assert code == 200 and status(services, "cb-8") == "validated"


@pytest.mark.gen_test
async def test_deeply_nested_verdict_body_is_a_400(http_client, base_url) -> None:  # type: ignore[no-untyped-def]
    body = b"[" * 30_000 + b"]" * 30_000  # under MAX_BODY, far past the recursion limit
    response = await http_client.fetch(f"{base_url}/api/v1/callbacks/r1?code=x", method="POST",
                                       body=body, raise_error=False)
    assert response.code == 400, response.body


@pytest.mark.gen_test
async def test_oversized_verdict_fields_are_a_413_and_a_long_reason_is_cut(  # type: ignore[no-untyped-def]
        http_client, base_url, services):
    """Issue 10 item 2: sizes are enforced where verdicts come in."""
    path = await upload(http_client, base_url, services, "cb-big")
    for body in ({"validation": "success", "id": "i" * 2000},
                 {"validation": "success", "extra": ["x" * 1000] * 70},
                 {"validation": "success", "pad": "y" * 70_000}):
        code, answer = await post(http_client, base_url, path, body)
        assert (code, answer.get("error")) == (413, "verdict_too_large"), (code, answer)
    assert status(services, "cb-big") == "stored"  # refused: nothing changed, code unused
    code, answer = await post(http_client, base_url, path,
                              {"validation": "failure", "reason": "r" * 10_000, "id": "ok"})
    assert code == 200, answer
    reason = services.database.get_upload("cb-big")["reason"]
    assert len(reason) == 4096 and reason.endswith(" [truncated]")
