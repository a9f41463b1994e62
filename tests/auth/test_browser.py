"""Staff sign-in in a real browser (Debian's chromium, driven by Playwright) against a real
``python app.py``: through the loopback OIDC issuer, and a CSRF attempt from a page of
another origin (same site, so the SameSite=Lax session cookie goes along) that must fail.
The local-account sign-in runs in tests/consumer/test_staff_browser.py."""
from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from core.settings import Settings
from tests.auth.issuer import Issuer
from tests.consumer.lab import obj_mesh
from tests.consumer.test_staff_browser import (
    CHROMIUM,
    CONTENT_TYPE,
    publish,
    sign_in,
    transfer_event,
)
from tests.e2e import Gateway
from tests.helpers import wait_for


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer().start()
    yield running
    running.stop()


@pytest.fixture
def gateway(tmp_path: Path, issuer: Issuer) -> Iterator[Gateway]:
    running = Gateway({"WORKDIR": str(tmp_path / "work"), **issuer.env()}).start()
    yield running
    running.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield browser
        finally:
            browser.close()


def api(gateway: Gateway, path: str) -> Any:
    request = urllib.request.Request(gateway.base + path, headers=gateway.auth)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_sign_in_through_the_oidc_issuer(gateway: Gateway, issuer: Issuer, chromium: Any) -> None:
    from playwright.sync_api import expect

    issuer.user = "ida.oidc"
    page = chromium.new_page()
    page.goto(gateway.base + "/staff/")
    assert "/auth/login" in page.url
    expect(page.locator("#oidc-login")).to_contain_text("Test IdP")
    page.click("#oidc-login")  # to the issuer, which signs in and sends the browser back
    page.wait_for_url(gateway.base + "/staff/")
    expect(page.locator("#user-name")).to_have_text("ida.oidc")
    assert len(issuer.token_requests) == 1 and issuer.token_requests[0]["code_verifier"]
    # sign out: back to the sign-in page, and the API no longer answers the browser
    page.click("#logout")
    page.wait_for_url(gateway.base + "/auth/login")
    answer = page.request.get(gateway.base + "/api/v1/asset-transfers")
    assert answer.status == 401


def test_a_csrf_attempt_from_another_origin_fails(gateway: Gateway, issuer: Issuer,
                                                  chromium: Any) -> None:
    gateway.auth = gateway.api_key("staff")
    case = f"X{uuid.uuid4().hex[:6].upper()}"
    name, data = f"{case}_Step1.obj", obj_mesh(1)
    code, answer = gateway.upload(data, content_type=CONTENT_TYPE)
    assert code == 202, answer
    publish(Settings.from_env(gateway.env), [transfer_event("created", name, data,
                                                            answer["request_id"])])
    assert wait_for(lambda: api(gateway, f"/api/v1/asset-transfers?case_number={case}")["count"], 20)
    [transfer] = api(gateway, f"/api/v1/asset-transfers?case_number={case}")["transfers"]
    plan = str(uuid.uuid4())
    target = f"{gateway.base}/api/v1/treatment-plans/{plan}/asset-transfers"
    body = json.dumps({"transfer_ids": [transfer["id"]]})
    # what a hostile page can do without a preflight: a text/plain form post and a
    # no-cors fetch, both with the browser's cookies
    issuer.page = f"""<!doctype html><title>hostile</title>
<form id="f" method="post" action="{target}" enctype="text/plain">
<input type="hidden" name='{body[:-1]}, "x": "' value='"}}'></form>
<script>
fetch({json.dumps(target)}, {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(body)}}})
  .finally(() => {{ document.title = "sent"; document.getElementById("f").submit(); }});
</script>"""
    page = chromium.new_page()
    sign_in(page, gateway)  # a signed-in staff user, whose cookie the attack rides on
    hostile = f"{issuer.url}/page"  # 127.0.0.1, another port: same site, another origin
    page.goto(hostile)
    page.wait_for_url(target, timeout=15_000)  # the form was posted (after the fetch)
    assert "forbidden" in page.content()  # the gateway's 403 answer to the form
    log = gateway.log.read_text()
    assert log.count("refused: no valid CSRF token") >= 2, log[-3000:]
    [after] = api(gateway, f"/api/v1/asset-transfers?case_number={case}")["transfers"]
    assert after["treatment_plan_uuid"] is None and after["associated_by"] is None
    # the same request from the staff page itself (with the session's token) works
    page.goto(gateway.base + "/staff/")
    page.locator("#user-name").wait_for()
    page.fill("#case-number", case)
    page.click("#search")
    page.locator("#transfers tbody input[type=checkbox]").first.check()
    page.fill("#plan-uuid", plan)
    page.click("#associate")
    from playwright.sync_api import expect

    expect(page.locator("#message")).to_contain_text("Associated 1 file(s)")
    [done] = api(gateway, f"/api/v1/asset-transfers?case_number={case}")["transfers"]
    assert done["treatment_plan_uuid"] == plan and done["associated_by"] == "dr.staff"
