"""OpenID Connect sign-in (issue 11) against a loopback issuer with keys the test minted:
the code flow with PKCE; ID tokens verified against the issuer's JWKS (a foreign key, another
audience or issuer, an expired token or another nonce are refused); state checked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import tornado.web

from tests.auth.issuer import Issuer, new_key
from tests.auth.test_staff import Browser
from tests.e2e import ROOT


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer().start()
    yield running
    running.stop()


@pytest.fixture
def env(tmp_path, http_port, issuer: Issuer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": str(http_port), **issuer.env()}


async def oidc_sign_in(browser: Browser, tamper_state: bool = False) -> Any:
    start = await browser.fetch("/auth/oidc/start?next=/staff/")
    assert start.code == 302, start.body
    authorize = start.headers["Location"]
    asked = parse_qs(urlsplit(authorize).query)
    assert asked["code_challenge_method"] == ["S256"] and len(asked["code_challenge"][0]) == 43
    assert "code_verifier" not in asked
    at_issuer = await browser.http.fetch(authorize, follow_redirects=False, raise_error=False)
    assert at_issuer.code == 302, at_issuer.body
    callback = urlsplit(at_issuer.headers["Location"])
    query = callback.query
    if tamper_state:
        query = query.replace("state=", "state=x")
    return await browser.fetch(f"{callback.path}?{query}")


@pytest.mark.gen_test(timeout=60)
async def test_sign_in_through_the_issuer(http_client, base_url, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    browser = Browser(http_client, base_url)
    form = await browser.fetch("/auth/login")
    assert b'id="oidc-login"' in form.body and b"Test IdP" in form.body
    issuer.claims = {"org_id": "org7"}
    done = await oidc_sign_in(browser)
    assert done.code == 302 and done.headers["Location"] == "/staff/", done.body
    session = await browser.session()
    assert (session["user"], session["org_id"], session["via"]) == ("oidc.user", "org7", "oidc")
    assert (await browser.fetch("/api/v1/asset-transfers")).code == 200
    assert (await browser.fetch("/staff/")).code == 200
    [token_request] = issuer.token_requests
    assert len(token_request["code_verifier"]) >= 43  # the issuer checked it against S256
    # the callback cannot be replayed: the flow's cookie is gone
    replay = Browser(http_client, base_url)
    assert (await replay.fetch("/auth/oidc/callback?code=x&state=y")).code == 403


@pytest.mark.gen_test(timeout=60)
async def test_a_staff_group_keeps_out_users_not_in_it(  # type: ignore[no-untyped-def]
        http_client, base_url, issuer: Issuer, app: tornado.web.Application) -> None:
    from auth.oidc import OidcClient, oidc_config

    auth = app.settings["auth"]
    config = oidc_config({**issuer.env(), "OIDC_STAFF_GROUP": "staff"})
    assert config is not None
    auth.oidc = OidcClient(config)
    issuer.claims = {"groups": ["lab"]}
    outsider = Browser(http_client, base_url)
    done = await oidc_sign_in(outsider)
    assert done.code == 403 and b"not in the staff group" in done.body
    issuer.claims = {"groups": ["lab", "staff"]}
    member = Browser(http_client, base_url)
    assert (await oidc_sign_in(member)).code == 302
    assert (await member.session())["user"] == "oidc.user"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("bad", ["foreign key", "audience", "issuer", "expired", "nonce",
                                 "state"])
async def test_tokens_that_do_not_verify_are_refused(  # type: ignore[no-untyped-def]
        http_client, base_url, issuer: Issuer, bad: str) -> None:
    now = int(time.time())
    if bad == "foreign key":
        issuer.sign_with = new_key()  # same kid, a key not in the JWKS
    elif bad == "audience":
        issuer.claims = {"aud": "another-client"}
    elif bad == "issuer":
        issuer.claims = {"iss": "http://127.0.0.1:1/other"}
    elif bad == "expired":
        issuer.claims = {"iat": now - 3600, "exp": now - 600}
    elif bad == "nonce":
        issuer.claims = {"nonce": "not-the-one-sent"}
    browser = Browser(http_client, base_url)
    done = await oidc_sign_in(browser, tamper_state=bad == "state")
    assert done.code == 403 and b'id="oidc-error"' in done.body, (bad, done.body)
    assert "gw_session" not in browser.cookies
    response = await browser.fetch("/auth/session")
    assert response.code == 401 and json.loads(response.body)["error"] == "unauthorized"


@pytest.mark.parametrize(("extra", "named"), [
    ({"OIDC_ISSUER": "http://127.0.0.1:1"}, "OIDC_CLIENT_ID"),
    ({"OIDC_ISSUER": "ftp://idp", "OIDC_CLIENT_ID": "x"}, "OIDC_ISSUER"),
    ({"AUTH_REQUIRED": "maybe"}, "AUTH_REQUIRED"),
    ({"SESSION_SECRET": "short"}, "SESSION_SECRET"),
])
def test_a_bad_auth_variable_stops_start_up(tmp_path, extra: dict[str, str], named: str) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "WORKDIR": str(tmp_path / "work"), **extra})
    assert done.returncode == 2 and f"configuration error: {named}" in done.stderr, done.stderr
