"""Staff sign-in (issue 11): the staff page and the association API need a signed-in staff
user (local account) or a key with the scope ``staff``; sessions are signed HttpOnly
SameSite cookies; every state-changing request needs the session's CSRF token, so a
cross-origin ``text/plain`` POST fails; the associating user is the signed-in one; a staff
user of an org sees only that org's transfers and plans."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from auth.schema import staff_users
from auth.users import add_user, disable_user
from core.services import Services
from tests.consumer.lab import Lab, obj_mesh
from tests.e2e import ROOT

PASSWORD = "correct horse battery"
Mint = Callable[..., dict[str, str]]


class Browser:
    """Just enough of a browser for the sign-in flow: a cookie jar and fetch."""

    def __init__(self, http_client: Any, base_url: str) -> None:
        self.http = http_client
        self.base = base_url
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    async def fetch(self, path: str, method: str = "GET", body: bytes | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.http.fetch(self.base + path, method=method, body=body,
                                         headers=sent, follow_redirects=False, raise_error=False)
        for header in response.headers.get_list("Set-Cookie"):
            self.set_cookie_headers.append(header)
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "expires=Thu, 01 Jan 1970" in header or "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    async def sign_in(self, user: str, password: str, next_path: str = "/staff/") -> Any:
        form = await self.fetch(f"/auth/login?next={next_path}")
        assert form.code == 200
        token = re.search(rb'name="csrf" value="([^"]+)"', form.body)
        assert token is not None
        body = urlencode({"user": user, "password": password, "csrf": token.group(1).decode(),
                          "next": next_path}).encode()
        return await self.fetch("/auth/login", "POST", body,
                                {"Content-Type": "application/x-www-form-urlencoded"})

    async def session(self) -> dict[str, Any]:
        response = await self.fetch("/auth/session")
        assert response.code == 200, response.body
        return json.loads(response.body)  # type: ignore[no-any-return]


@pytest.fixture
def lab(services: Services) -> Lab:
    return Lab(services.settings, services.storage, services.database)


@pytest.mark.gen_test(timeout=60)
async def test_staff_page_and_api_need_a_signed_in_user(  # type: ignore[no-untyped-def]
        http_client, base_url, services: Services, mint: Mint) -> None:
    add_user(services.database.engine, "alice", PASSWORD)
    browser = Browser(http_client, base_url)
    page = await browser.fetch("/staff/")
    assert page.code == 302 and page.headers["Location"] == "/auth/login?next=%2Fstaff%2F"
    for path in ("/api/v1/asset-transfers", f"/api/v1/treatment-plans/{uuid.uuid4()}",
                 "/api/ingress/v1/asset-transfers"):
        response = await browser.fetch(path)
        assert response.code == 401 and json.loads(response.body)["error"] == "unauthorized"
    assert (await browser.fetch("/api/v1/treatment-plans/" + str(uuid.uuid4()) + "/asset-transfers",
                                "POST", b'{"transfer_ids": [1], "user": "mallory"}')).code == 401
    refused = await browser.sign_in("alice", "wrong password!")
    assert refused.code == 401 and b"Wrong user name or password" in refused.body
    assert (await browser.sign_in("nobody", PASSWORD)).code == 401
    assert "gw_session" not in browser.cookies
    signed = await browser.sign_in("alice", PASSWORD)
    assert signed.code == 302 and signed.headers["Location"] == "/staff/"
    cookie = next(h for h in browser.set_cookie_headers if h.startswith("gw_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert (await browser.fetch("/staff/")).code == 200
    assert (await browser.fetch("/api/v1/asset-transfers")).code == 200
    session = await browser.session()
    assert session["user"] == "alice" and session["via"] == "local" and len(session["csrf"]) > 20
    # a key with the scope staff works for the API (and the page); other scopes do not
    assert (await browser.http.fetch(base_url + "/api/v1/asset-transfers", headers=mint("staff"))).code == 200
    other = await browser.http.fetch(base_url + "/api/v1/asset-transfers", headers=mint("admin"),
                                     raise_error=False)
    assert other.code == 403
    # a forged or tampered cookie is no session
    tampered = Browser(http_client, base_url)
    tampered.cookies["gw_session"] = browser.cookies["gw_session"][:-2] + "xx"
    assert (await tampered.fetch("/api/v1/asset-transfers")).code == 401
    # disabling the user signs them out at their next request
    disable_user(services.database.engine, "alice")
    assert (await browser.fetch("/api/v1/asset-transfers")).code == 401


@pytest.mark.gen_test(timeout=60)
async def test_csrf_and_the_associating_user(  # type: ignore[no-untyped-def]
        http_client, base_url, services: Services, lab: Lab) -> None:
    add_user(services.database.engine, "bob", PASSWORD)
    asset = lab.file("C1_Step1.obj", obj_mesh(1))
    lab.event("created", asset)
    transfer = lab.transfer_id(asset)
    browser = Browser(http_client, base_url)
    assert (await browser.sign_in("bob", PASSWORD)).code == 302
    csrf = (await browser.session())["csrf"]
    path = f"/api/v1/treatment-plans/{uuid.uuid4()}/asset-transfers"
    body = json.dumps({"transfer_ids": [transfer], "user": "mallory"}).encode()
    attempts = [
        # what a page on another origin can send without a preflight: a text/plain POST
        # with the browser's cookie
        {"Content-Type": "text/plain", "Origin": "http://evil.example"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "X-CSRF-Token": "not-the-token"},
        {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Origin": "http://evil.example"},
    ]
    for headers in attempts:
        response = await browser.fetch(path, "POST", body, headers)
        assert response.code == 403, headers
        assert json.loads(response.body)["error"] == "forbidden"
    response = await browser.fetch(path, "POST", body, {"Content-Type": "application/json",
                                                        "X-CSRF-Token": csrf})
    assert response.code == 200, response.body
    plan = json.loads(response.body)
    assert {t["associated_by"] for t in plan["transfers"]} == {"bob"}  # not "mallory"
    # the sign-in form itself: a POST without the form's own token fails
    forged = await Browser(http_client, base_url).fetch(
        "/auth/login", "POST", urlencode({"user": "bob", "password": PASSWORD, "csrf": "x"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert forged.code == 403 and "gw_session" not in forged.headers.get("Set-Cookie", "")
    # sign out needs the token too, then the session is gone
    assert (await browser.fetch("/auth/logout", "POST", b"", {"Content-Type": "text/plain"})).code == 403
    out = await browser.fetch("/auth/logout", "POST", urlencode({"csrf": csrf}).encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    assert out.code == 302 and "gw_session" not in browser.cookies
    assert (await browser.fetch("/api/v1/asset-transfers")).code == 401


@pytest.mark.gen_test(timeout=60)
async def test_no_open_redirect_after_sign_in(http_client, base_url, services: Services) -> None:  # type: ignore[no-untyped-def]
    add_user(services.database.engine, "carol", PASSWORD)
    for evil in ("//evil.example/", "http://evil.example/", "/\\evil.example"):
        browser = Browser(http_client, base_url)
        response = await browser.sign_in("carol", PASSWORD, next_path=evil)
        assert response.code == 302 and response.headers["Location"] == "/staff/", evil


@pytest.mark.gen_test(timeout=60)
async def test_a_staff_user_of_an_org_sees_only_that_org(  # type: ignore[no-untyped-def]
        http_client, base_url, services: Services, lab: Lab, mint: Mint) -> None:
    add_user(services.database.engine, "olga", PASSWORD, org_id="org1")
    mine = lab.file("T1_Step1.obj", obj_mesh(1), org_id="org1")
    theirs = lab.file("T1_Step2.obj", obj_mesh(2), org_id="org2")
    for asset in (mine, theirs):
        lab.event("created", asset)
    their_plan = str(uuid.uuid4())
    lab.associate(their_plan, [theirs])
    browser = Browser(http_client, base_url)
    assert (await browser.sign_in("olga", PASSWORD)).code == 302
    csrf = (await browser.session())["csrf"]
    listed = json.loads((await browser.fetch("/api/v1/asset-transfers?case_number=T1")).body)
    assert [t["file_name"] for t in listed["transfers"]] == ["T1_Step1.obj"]
    assert (await browser.fetch(f"/api/v1/treatment-plans/{their_plan}")).code == 404
    headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf}
    for plan, ids in ((str(uuid.uuid4()), [lab.transfer_id(theirs)]),
                      (their_plan, [lab.transfer_id(mine)])):
        response = await browser.fetch(f"/api/v1/treatment-plans/{plan}/asset-transfers", "POST",
                                       json.dumps({"transfer_ids": ids}).encode(), headers)
        assert response.code == 404, response.body
    mine_plan = str(uuid.uuid4())
    response = await browser.fetch(f"/api/v1/treatment-plans/{mine_plan}/asset-transfers", "POST",
                                   json.dumps({"transfer_ids": [lab.transfer_id(mine)]}).encode(), headers)
    assert response.code == 200
    # a key (no org) sees both
    both = await http_client.fetch(base_url + "/api/v1/asset-transfers?case_number=T1",
                                   headers=mint("staff"))
    assert len(json.loads(both.body)["transfers"]) == 2


def test_users_are_added_from_the_command_line_with_hashed_passwords(tmp_path: Path) -> None:
    env = {**os.environ, "WORKDIR": str(tmp_path / "work")}
    run = [sys.executable, str(ROOT / "app.py"), "users"]
    added = subprocess.run([*run, "add", "dana", "--org", "org9"], input=PASSWORD + "\n",
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert added.returncode == 0, added.stderr
    short = subprocess.run([*run, "add", "erin"], input="short\n", capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=60)
    assert short.returncode == 1 and "at least" in short.stderr
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=60)
    assert listed.stdout == "dana\torg9\tactive\n"
    from core.settings import Settings
    from db import make_engine

    engine = make_engine(Settings.from_env(env).database_url)
    with engine.connect() as conn:
        stored = conn.execute(select(staff_users.c.password_hash)).scalar_one()
    engine.dispose()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


@pytest.mark.gen_test(timeout=60)
async def test_guessing_passwords_is_throttled(http_client, base_url, services: Services) -> None:  # type: ignore[no-untyped-def]
    from auth.throttle import MAX_FAILURES

    add_user(services.database.engine, "frank", PASSWORD)
    browser = Browser(http_client, base_url)
    for attempt in range(MAX_FAILURES):
        assert (await browser.sign_in("frank", f"guess number {attempt}")).code == 401
    refused = await browser.sign_in("frank", PASSWORD)  # even the right one, for now
    assert refused.code == 429 and b"Too many failed sign-ins" in refused.body
    assert "gw_session" not in browser.cookies


def test_behind_a_tls_proxy_the_session_cookie_is_secure(tmp_path: Path) -> None:
    """``X-Forwarded-Proto: https`` from the proxy (the gateway runs with xheaders): the
    session cookie is ``Secure``; over plain HTTP it cannot be."""
    import http.client

    from tests.e2e import Gateway

    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}, ["gateway"]).start()
    try:
        added = subprocess.run([sys.executable, str(ROOT / "app.py"), "users", "add", "gina"],
                               input=PASSWORD + "\n", capture_output=True, text=True,
                               env=gateway.env, cwd=ROOT, timeout=60)
        assert added.returncode == 0, added.stderr

        def request(method: str, path: str, body: str | None = None,
                    headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
            connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
            connection.request(method, path, body=body, headers={
                "X-Forwarded-Proto": "https", **(headers or {})})
            return connection.getresponse()

        form = request("GET", "/auth/login")
        login_cookie = form.getheader("Set-Cookie", "")
        assert "Secure" in login_cookie
        token = re.search(r'name="csrf" value="([^"]+)"', form.read().decode())
        assert token is not None
        signed = request("POST", "/auth/login",
                         urlencode({"user": "gina", "password": PASSWORD,
                                    "csrf": token.group(1)}),
                         {"Content-Type": "application/x-www-form-urlencoded",
                          "Cookie": login_cookie.split(";", 1)[0]})
        assert signed.status == 302
        cookies = [v for k, v in signed.getheaders() if k.lower() == "set-cookie"]
        session = next(c for c in cookies if c.startswith("gw_session="))
        assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session
    finally:
        assert gateway.stop() == 0
