"""A puller in the test process: Services, the puller and the jobs API (Tornado) on their own
asyncio loop in a thread, talking to a loopback SFTP server (``tests.pull.sftpserver``)."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Coroutine

import yaml
from sqlalchemy import select
from tornado.httpserver import HTTPServer

from auth.keys import create_key
from core.services import Services
from core.settings import Settings
from db.schema import upload_events, uploads
from pull.role import PullRole, preflight
from pull.service import Puller
from tests.helpers import free_port
from tests.pull.sftpserver import SFTPTestServer
from upload.app import make_app

FINAL = ("completed", "failed")


def entry(server: SFTPTestServer, **overrides: Any) -> dict[str, Any]:
    """A provider entry for ``server`` (password from a variable, host key pinned)."""
    base: dict[str, Any] = {
        "host": "127.0.0.1", "port": server.port, "user": server.user,
        "password_env": "TEST_SFTP_PASSWORD", "host_key": server.host_key_line,
        "directory": "/outgoing", "service": "testareno", "category": "pulled",
        "retry_delay": 0.05, "retries": 3, "timeout": 5,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def write_config(path: Path, providers: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"providers": providers}, allow_unicode=True))
    return path


class PullHarness:
    def __init__(self, tmp_path: Path, providers: dict[str, dict[str, Any]],
                 server: SFTPTestServer, **env: str) -> None:
        config = write_config(tmp_path / "providers.yaml", providers)
        self.env = {"WORKDIR": str(tmp_path / "work"), "URL_SIGNING_KEY": "test",
                    "PULL_PROVIDERS": str(config), "TEST_SFTP_PASSWORD": server.password, **env}
        os.environ["TEST_SFTP_PASSWORD"] = server.password  # password_env of entry()
        self.settings = Settings.from_env(self.env)
        self.providers = preflight(self.settings)
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.services: Services | None = None
        self.role: PullRole | None = None
        self.http: HTTPServer | None = None
        self.port = free_port()
        self.auth: dict[str, str] = {}
        self.base = f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, puller: bool = True, **puller_args: Any) -> PullHarness:
        self.thread.start()
        self.call(self._start(puller, puller_args))
        return self

    async def _start(self, puller: bool, puller_args: dict[str, Any]) -> None:
        self.services = Services.build(self.settings)
        self.services.relay.start()
        self.role = PullRole(self.services, self.providers)
        if puller:
            self.role.puller = Puller(self.services, self.providers, **puller_args)
            await self.role.puller.start()
        token = create_key(self.services.database.engine, f"pulls-{uuid.uuid4().hex[:8]}",
                           ["pulls"])
        self.auth = {"Authorization": f"Bearer {token}"}  # sent by request() unless asked
        self.http = HTTPServer(make_app(self.services, self.role.routes()))
        self.http.listen(self.port, "127.0.0.1")

    def stop(self) -> None:
        if self.role is not None:
            self.call(self.role.stop())
        if self.http is not None:
            self.http.stop()
        if self.services is not None:
            self.services.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> PullHarness:
        return self if self.thread.is_alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # HTTP ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=self.auth if headers is None else headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def start_job(self, provider: str, **body: Any) -> str:
        code, answer = self.request("POST", f"/api/v1/pulls/{provider}", body or None)
        assert code == 202, answer
        return str(answer["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        code, answer = self.request("GET", f"/api/v1/pulls/jobs/{job_id}")
        assert code == 200, answer
        return answer

    def wait_job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.job(job_id)
            if found["state"] in FINAL or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def run_job(self, provider: str, timeout: float = 60) -> dict[str, Any]:
        found = self.wait_job(self.start_job(provider), timeout)
        assert found["state"] in FINAL, found
        return found

    # database --------------------------------------------------------------------------------

    def uploads(self) -> list[dict[str, Any]]:
        assert self.services is not None
        with self.services.database.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(uploads).order_by(
                uploads.c.filename)).mappings()]

    def timeline(self, request_id: str) -> list[dict[str, Any]]:
        assert self.services is not None
        with self.services.database.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(upload_events).where(
                upload_events.c.request_id == request_id)).mappings()]

    def stored(self, row: dict[str, Any]) -> bytes:
        assert self.services is not None
        with self.services.storage.open_reader(row["bucket"], row["object_key"]) as reader:
            return reader.read()
