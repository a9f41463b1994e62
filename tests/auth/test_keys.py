"""API keys (issue 11): created, listed and revoked with ``python app.py keys``, stored
hashed, sent as ``Authorization: Bearer``; 401 without, 403 without the scope; the
``require_scope`` helper any handler uses; health details only for ``admin``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.web
from sqlalchemy import select

from auth import Authenticator, require_scope
from auth.keys import create_key, list_keys, revoke_key
from auth.schema import api_keys
from core.services import Services
from core.settings import Settings
from db import make_engine
from tests.e2e import ROOT

Mint = Callable[..., dict[str, str]]


def app_py(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=60)


def test_the_command_line_adds_lists_and_revokes_keys_stored_hashed(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work")}
    added = app_py(env, "keys", "add", "ops", "--scope", "pulls", "--scope", "admin")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("gwk_") and len(token) > 50
    assert "not shown again" in added.stderr
    listed = app_py(env, "keys", "list")
    assert listed.returncode == 0 and token not in listed.stdout
    assert listed.stdout.startswith("ops\tadmin pulls\tactive"), listed.stdout
    engine = make_engine(Settings.from_env({**os.environ, **env}).database_url)
    with engine.connect() as conn:
        stored = conn.execute(select(api_keys.c.hash)).scalar_one()
    engine.dispose()
    assert stored.startswith("$argon2id$") and token not in stored
    assert app_py(env, "keys", "add", "ops", "--scope", "admin").returncode == 1  # name taken
    bad = app_py(env, "keys", "add", "x", "--scope", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert app_py(env, "keys", "revoke", "ops").returncode == 0
    assert "revoked" in app_py(env, "keys", "list").stdout
    again = app_py(env, "keys", "revoke", "ops")
    assert again.returncode == 1 and "no active key" in again.stderr


class AreasProbe(tornado.web.RequestHandler):
    """What another package's handler looks like with the helper."""

    @require_scope("areas")
    async def get(self) -> None:
        principal = self.principal  # type: ignore[attr-defined]
        self.finish({"who": principal.name if principal else None})

    @require_scope("areas")
    def post(self) -> None:  # a plain method works too
        self.finish({"posted": True})


def probe_app(services: Services, required: bool = True) -> tornado.web.Application:
    return tornado.web.Application([(r"/probe", AreasProbe)],
                                   auth=Authenticator(services.database.engine, required))


async def fetch(http_client, url: str, headers: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
                method: str = "GET") -> tuple[int, Any, Any]:
    response = await http_client.fetch(url, headers=headers or {}, method=method,
                                       body=b"" if method == "POST" else None, raise_error=False)
    return response.code, json.loads(response.body or b"null"), response.headers


@pytest.mark.gen_test(timeout=60)
async def test_require_scope_401_403_and_revocation(http_client, http_server, services: Services,  # type: ignore[no-untyped-def]
                                                    mint: Mint) -> None:
    http_server.request_callback = probe_app(services)
    url = f"http://127.0.0.1:{http_server._sockets[next(iter(http_server._sockets))].getsockname()[1]}/probe"
    code, body, headers = await fetch(http_client, url)
    assert code == 401 and body["error"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    for bad in ("Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer",
                "Bearer gwk_0123456789abcdef_" + "A" * 43):
        code, body, _ = await fetch(http_client, url, {"Authorization": bad})
        assert code == 401, bad
    code, body, _ = await fetch(http_client, url, mint("pulls", "admin"))
    assert code == 403 and body["error"] == "forbidden" and "areas" in body["message"]
    good = mint("areas")
    assert (await fetch(http_client, url, good))[:2] == (200, {"who": "test-1"})
    assert (await fetch(http_client, url, good, "POST"))[:2] == (200, {"posted": True})
    token = good["Authorization"].split()[1]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await fetch(http_client, url, {"Authorization": f"Bearer {forged}"}))[0] == 401
    revoke_key(services.database.engine, "test-1")
    assert (await fetch(http_client, url, good))[0] == 401  # at once, though verified before


@pytest.mark.gen_test(timeout=60)
async def test_auth_required_off_lets_anonymous_through_but_checks_sent_keys(  # type: ignore[no-untyped-def]
        http_client, http_server, services: Services) -> None:
    http_server.request_callback = probe_app(services, required=False)
    url = f"http://127.0.0.1:{http_server._sockets[next(iter(http_server._sockets))].getsockname()[1]}/probe"
    assert (await fetch(http_client, url))[:2] == (200, {"who": None})
    assert (await fetch(http_client, url, {"Authorization": "Bearer nonsense"}))[0] == 401


@pytest.mark.gen_test(timeout=60)
async def test_an_application_without_authenticator_refuses(  # type: ignore[no-untyped-def]
        http_client, http_server, services: Services) -> None:
    token = create_key(services.database.engine, "k", ["areas"])
    assert [k.name for k in list_keys(services.database.engine)] == ["k"]
    http_server.request_callback = tornado.web.Application([(r"/probe", AreasProbe)])
    url = f"http://127.0.0.1:{http_server._sockets[next(iter(http_server._sockets))].getsockname()[1]}/probe"
    assert (await fetch_raw(http_client, url, {"Authorization": f"Bearer {token}"})) == 500
    with pytest.raises(ValueError):
        require_scope("root")


async def fetch_raw(http_client, url: str, headers: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    response = await http_client.fetch(url, headers=headers, raise_error=False)
    return int(response.code)


@pytest.mark.gen_test(timeout=60)
async def test_health_details_only_with_admin(http_client, base_url, mint: Mint) -> None:  # type: ignore[no-untyped-def]
    code, body, _ = await fetch(http_client, base_url + "/api/v1/health")
    assert code in (200, 503) and set(body["components"]) == {"storage", "database", "bus"}
    assert set(body["components"].values()) <= {"ok", "down"} and "details" not in body
    assert isinstance(body["down"], list)
    code, body, _ = await fetch(http_client, base_url + "/api/v1/health", mint("pulls"))
    assert "details" not in body
    code, body, _ = await fetch(http_client, base_url + "/api/v1/health", mint("admin"))
    assert isinstance(body["details"], dict)
