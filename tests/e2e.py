"""End-to-end driver: a real `python app.py` process, uploads over HTTP, and the bus read
back through the same drivers a downstream service would use."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from bus import Consumer, get_bus
from core.settings import Settings
from tests.helpers import free_port, identity, multipart, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IDENTITY = identity()


# Every process a Gateway started; tests/conftest.py kills those still running after each
# test, so that a test which failed before stopping its gateways cannot leave them working
# on the shared database and bus for the tests after it.
STARTED: list[subprocess.Popen[bytes]] = []


def kill_leftovers() -> list[int]:
    """Kill every started process still running; returns their pids."""
    left = [process for process in STARTED if process.poll() is None]
    for process in left:
        process.kill()
    for process in left:
        process.wait(10)
    STARTED.clear()
    return [process.pid for process in left]


class Gateway:
    def __init__(self, env: dict[str, str], role: list[str] | None = None) -> None:
        self.port = int(env.get("LISTEN_PORT") or free_port())
        self.env = {**os.environ, **env, "LISTEN_PORT": str(self.port)}
        self.role = role or []
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(env["WORKDIR"]) / f"gateway-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.auth: dict[str, str] = {}  # headers helpers send (an API key: api_key())

    def start(self) -> Gateway:
        Path(self.env["WORKDIR"]).mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *self.role], cwd=ROOT, env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        STARTED.append(self.process)
        if not wait_for(self._healthy, timeout=30):
            self.stop()
            raise AssertionError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.base + "/api/v1/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        """Signal the process and wait for it. One that does not exit in ``timeout`` is
        killed before the failure is raised: a gateway left running would hold its
        database connections and keep working on the shared database for the rest of
        the session (every later test then waits behind its locks)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"{self.role or 'all'} did not exit {timeout:.0f} s after "
                                 f"signal {sig}; killed:\n{self.log.read_text()[-3000:]}") from None

    def upload(self, data: bytes, content_type: str = "application/vnd.redhat.testareno.e2e+tgz",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        body, ctype = multipart(data, content_type=content_type)
        request = urllib.request.Request(
            self.base + "/api/v1/upload", data=body, method="POST",
            headers={"Content-Type": ctype, "x-rh-identity": identity(), **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def api_key(self, *scopes: str) -> dict[str, str]:
        """The Authorization header of a new API key with ``scopes``, made the way an
        operator does (``python app.py keys add``, on this gateway's database)."""
        name = f"test-{os.urandom(4).hex()}"
        args = [a for scope in scopes for a in ("--scope", scope)]
        done = subprocess.run([sys.executable, str(ROOT / "app.py"), "keys", "add", name, *args],
                              cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {"Authorization": f"Bearer {done.stdout.strip()}"}

    def status(self, request_id: str, ident: str | None = DEFAULT_IDENTITY,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The status API's answer, asked with the identity the upload was made with (the
        tests' default one, as ``upload`` sends; None for one made without: the watcher's,
        a puller's, a bundle's), or with ``headers`` (an API key with the scope status
        sees any upload)."""
        if headers is None:
            headers = {"x-rh-identity": ident} if ident is not None else {}
        request = urllib.request.Request(f"{self.base}/api/v1/uploads/{request_id}",
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback only
        return response.read()  # type: ignore[no-any-return]


def messages_for(consumer: Consumer, request_ids: set[str], timeout: float) -> Iterator[dict[str, Any]]:
    """Yield decoded messages about ``request_ids`` until each has been seen once."""
    deadline = time.monotonic() + timeout
    missing = set(request_ids)
    while missing and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        value = json.loads(message.value)
        if value.get("request_id") in request_ids:
            missing.discard(value["request_id"])
            yield value
    assert not missing, f"no message for {missing}"


def check_round_trip(gateway: Gateway, settings: Settings, verdict: str) -> dict[str, Any]:
    """Upload, fetch the announcement's URL, wait for the verdict's outcome, check the
    timeline. Returns the final status document."""
    bus = get_bus(settings)
    group = f"e2e-{time.monotonic_ns()}"
    announcements = bus.consumer(group + "-announcements", ["platform.upload.testareno"])
    available = bus.consumer(group + "-available", ["platform.upload.available"])
    data = os.urandom(1024 * 1024 + 17)
    try:
        code, answer = gateway.upload(data)
        assert code == 202, answer
        request_id = answer["request_id"]
        [announcement] = messages_for(announcements, {request_id}, 30)
        try:
            fetched = fetch(announcement["url"])
        except urllib.error.HTTPError as exc:
            # the validator and the verdict were quicker: the object left quarantine (S3,
            # moto included, answers 403 for a missing key to a caller who may not list)
            assert exc.code in (403, 404), exc
            assert gateway.status(request_id)["status"] in ("validated", "available", "rejected")
        else:
            assert fetched == data
            assert hashlib.sha256(fetched).hexdigest() == announcement["checksums"]["sha256"]
        final = {"success": "available", "failure": "rejected"}[verdict]
        status = wait_for(lambda: (s := gateway.status(request_id))["status"] == final and s, 30)
        assert status, gateway.status(request_id)
        if verdict == "success":
            [message] = messages_for(available, {request_id}, 30)
            assert fetch(message["url"]) == data and message["url"] != announcement["url"]
            assert message["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
            expected = ["received", "stored", "announced", "validated", "available"]
        else:
            expected = ["received", "stored", "announced", "rejected"]
        assert sorted(e["status"] for e in status["timeline"]) == sorted(expected)
        return status  # type: ignore[no-any-return]
    finally:
        announcements.close()
        available.close()
        bus.close()
