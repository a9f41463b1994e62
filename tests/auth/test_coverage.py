"""Issue 11, "done when": with AUTH_REQUIRED on (the default), nothing but the upload
path, health, probes, metrics, signed downloads (and the API description, version and the
sign-in pages) answers without credentials. Every route the gateway serves (the pull jobs
API included) is asked anonymously with every method its handler implements; a route
added later without authentication fails this test unless it is listed as public here."""
from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import tornado.web

from core.services import Services
from pull.api import routes as pull_routes
from upload.app import make_app, routes

# route pattern prefix -> why it answers without credentials
PUBLIC = {
    "/api/v1/upload": "the upload path (IDENTITY_REQUIRED decides)",
    "/api/v1/uploads/": "the status API: an identity's own org, or identity-less uploads",
    "/api/v1/tus/": "the upload path (tus)",
    "/upload": "the browser upload page (tus)",
    "/api/v1/callbacks/": "validators' verdicts: a one-time code is the credential",
    "/api/v1/download/": "signed downloads: the signature is the credential",
    "/api/v1/direct/": "signed part URLs of upload areas: the signature is the credential",
    "/api/v1/health": "component names and ok/down only (details need admin)",
    "/api/v1/version": "the version",
    "/api/v1/openapi.json": "the API description",
    "/metrics": "metrics", "/livez": "probe", "/readyz": "probe",
    "/auth/": "the sign-in pages",
}
SIGN_IN_PAGES = ("/staff",)  # browsers are sent to /auth/login


@pytest.fixture
def app(services: Services) -> tornado.web.Application:
    return make_app(services, pull_routes(services, {}, lambda name: None))


def example_path(pattern: str) -> str:
    def value(group: re.Match[str]) -> str:
        text = group.group(0)
        if "{8}" in text:
            return str(uuid.uuid4())
        if "{32}" in text:
            return uuid.uuid4().hex
        if "[0-9]{1,5}" in text:
            return "1"
        if text == "([a-z]+)":
            return "quarantine"
        return "x1"

    path = pattern.replace("/?", "/").replace("\\.", ".")
    return re.sub(r"\((?:[^()]|\{[^}]*\})*\)", value, path)


def implemented(handler: type[Any]) -> list[str]:
    base = tornado.web.RequestHandler
    return [m for m in handler.SUPPORTED_METHODS
            if getattr(handler, m.lower(), None) is not getattr(base, m.lower(), None)]


@pytest.mark.gen_test(timeout=60)
async def test_nothing_else_answers_without_credentials(  # type: ignore[no-untyped-def]
        http_client, base_url, services: Services) -> None:
    table = routes(services) + pull_routes(services, {}, lambda name: None)
    asked, wrong = 0, []
    for route in table:
        pattern, handler = route[0], route[1]
        if any(pattern.startswith(prefix) or pattern.startswith("/api/ingress/v1" + prefix[7:])
               for prefix in PUBLIC if prefix.startswith("/api/v1")) \
                or any(pattern.startswith(p) for p in PUBLIC if not p.startswith("/api/v1")):
            continue
        path = example_path(pattern)
        for method in implemented(handler) or ["GET"]:
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            response = await http_client.fetch(base_url + path, method=method, body=body,
                                               follow_redirects=False, raise_error=False,
                                               allow_nonstandard_methods=True)
            asked += 1
            location = response.headers.get("Location", "")
            if pattern.startswith(SIGN_IN_PAGES):
                ok = response.code in (301, 302) and location.startswith(("/auth/login", "/staff/"))
            else:
                ok = response.code == 401
            if not ok:
                wrong.append(f"{method} {path} ({pattern}): {response.code} {response.body[:120]!r}")
    assert asked >= 40, asked
    assert not wrong, "\n".join(wrong)
