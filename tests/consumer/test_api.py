"""The association API over HTTP (in-process gateway), on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import pytest
import tornado.web

from auth.keys import create_key
from core.services import Services
from core.settings import Settings
from db import Database
from tests.consumer.lab import Lab, obj_mesh
from upload.app import make_app


@pytest.fixture
def services(tmp_path, http_port, database_url: str, bundle_db: Database) -> Iterator[Services]:  # type: ignore[no-untyped-def]
    built = Services.build(Settings.from_env({
        "WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": str(http_port),
        "DATABASE_URL": database_url, "URL_SIGNING_KEY": "k"}))
    name = f"staff-{uuid.uuid4().hex[:8]}"
    token = create_key(built.database.engine, name, ["staff"])
    STAFF.clear()
    STAFF.update({"Authorization": f"Bearer {token}"})
    KEY_NAME[:] = [name]
    yield built
    built.close()


STAFF: dict[str, str] = {}  # the Authorization header of the test's staff key
KEY_NAME: list[str] = []  # and its name


@pytest.fixture
def app(services: Services) -> tornado.web.Application:
    return make_app(services)


@pytest.fixture
def api_lab(services: Services) -> Lab:
    return Lab(services.settings, services.storage, services.database)


async def call(http_client, base_url: str, path: str, body: Any = None,  # type: ignore[no-untyped-def]
               raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = await http_client.fetch(base_url + path, method="POST" if payload is not None else "GET",
                                       body=payload, raise_error=False, headers=STAFF)
    return response.code, json.loads(response.body)


@pytest.mark.gen_test
async def test_list_associate_and_show(http_client, base_url, api_lab: Lab) -> None:  # type: ignore[no-untyped-def]
    one, two = api_lab.file("K1_Step1.obj", obj_mesh(1)), api_lab.file("K1_Step2.obj", obj_mesh(2))
    api_lab.event("created", one)
    api_lab.event("uploaded", two)
    api_lab.available(two)
    api_lab.event("created", api_lab.file("K1 Step3.obj", obj_mesh(3)))
    code, listed = await call(http_client, base_url, "/api/v1/asset-transfers?case_number=K1")
    assert code == 200 and [t["file_name"] for t in listed["transfers"]] == ["K1_Step1.obj", "K1_Step2.obj"]
    assert [t["status"] for t in listed["transfers"]] == ["created", "ready"]
    code, unmatched = await call(http_client, base_url, "/api/ingress/v1/asset-transfers?status=unmatched")
    assert code == 200 and [t["file_name"] for t in unmatched["transfers"]] == ["K1 Step3.obj"]
    plan_uuid = str(uuid.uuid4())
    ids = [t["id"] for t in listed["transfers"]]
    code, plan = await call(http_client, base_url, f"/api/v1/treatment-plans/{plan_uuid}/asset-transfers",
                            {"transfer_ids": ids, "user": " Dr. Who "})
    assert code == 200 and plan["status"] == "waiting" and plan["assets"] == []
    # recorded as the caller (this test's staff key), not as the body's free-text name
    assert {t["associated_by"] for t in plan["transfers"]} == {f"key:{KEY_NAME[0]}"}
    api_lab.event("uploaded", one)
    api_lab.available(one)
    api_lab.bundler.run_pending()
    code, plan = await call(http_client, base_url, f"/api/v1/treatment-plans/{plan_uuid.upper()}")
    assert code == 200 and plan["status"] == "bundled"
    [asset] = plan["assets"]
    assert asset["status"] == "done" and "signature=" in asset["url"]
    download = await http_client.fetch(asset["url"].replace(api_lab.settings.public_url, base_url))
    assert download.body[:2] == b"PK"
    code, listed = await call(http_client, base_url, "/api/v1/asset-transfers?case_number=K1&status=bundled")
    assert [t["id"] for t in listed["transfers"]] == ids


@pytest.mark.gen_test
async def test_association_errors(http_client, base_url, api_lab: Lab) -> None:  # type: ignore[no-untyped-def]
    asset = api_lab.file("M1_Step1.obj", obj_mesh(1))
    api_lab.event("created", asset)
    same_name = api_lab.file("M1_Step1.obj", obj_mesh(2))
    api_lab.event("created", same_name)
    bad_name = api_lab.file("M1-Step2.obj", obj_mesh(3))
    api_lab.event("created", bad_name)
    first, second = (api_lab.transfer_id(a) for a in (asset, same_name))
    plan, other = str(uuid.uuid4()), str(uuid.uuid4())
    path = f"/api/v1/treatment-plans/{plan}/asset-transfers"
    cases = [
        ("/api/v1/treatment-plans/not-a-uuid/asset-transfers", {"transfer_ids": [first], "user": "u"}, 400),
        (path, {"transfer_ids": [], "user": "u"}, 400),
        (path, {"transfer_ids": ["1"], "user": "u"}, 400),
        (path, [first], 400),
        (path, {"transfer_ids": [first, 999999], "user": "u"}, 404),
        (path, {"transfer_ids": [first, second], "user": "u"}, 409),
        (path, {"transfer_ids": [api_lab.transfer_id(bad_name)], "user": "u"}, 409),
        (path, {"transfer_ids": [first], "user": "u"}, 200),
        (path, {"transfer_ids": [first], "user": "u"}, 200),  # again: idempotent
        (path, {"transfer_ids": [second], "user": "u"}, 409),  # a second file of that name
        (f"/api/v1/treatment-plans/{other}/asset-transfers", {"transfer_ids": [first], "user": "u"}, 409),
    ]
    for url, body, expected in cases:
        code, answer = await call(http_client, base_url, url, body)
        assert code == expected, (body, answer)
        if expected >= 400:
            assert set(answer) == {"error", "message"} and answer["message"], answer
    code, answer = await call(http_client, base_url, path, raw=b"{not json")
    assert (code, answer["error"]) == (400, "bad_request")
    code, answer = await call(http_client, base_url, f"/api/v1/treatment-plans/{other}")
    assert (code, answer["error"]) == (404, "not_found")
    code, answer = await call(http_client, base_url, "/api/v1/asset-transfers?status=lost")
    assert (code, answer["error"]) == (400, "bad_request")
    code, answer = await call(http_client, base_url, f"/api/v1/treatment-plans/{other}/asset-transfers",
                              {"transfer_ids": [first], "user": "u"})
    assert answer["error"] == "already_associated" and plan in answer["message"]


@pytest.mark.gen_test
async def test_staff_page_is_served(http_client, base_url, services: Services) -> None:  # type: ignore[no-untyped-def]
    page = await http_client.fetch(base_url + "/staff/", headers=STAFF)
    assert page.code == 200 and b"<script src=\"staff.js\">" in page.body
    script = await http_client.fetch(base_url + "/staff/staff.js", headers=STAFF)
    assert script.code == 200 and b"textContent" in script.body
    redirect = await http_client.fetch(base_url + "/staff", follow_redirects=False, raise_error=False)
    assert redirect.code in (301, 302) and redirect.headers["Location"] == "/staff/"
    spec = json.loads((await http_client.fetch(base_url + "/api/v1/openapi.json")).body)
    assert {"/api/v1/asset-transfers", "/api/v1/treatment-plans/{plan_uuid}"} <= set(spec["paths"])
