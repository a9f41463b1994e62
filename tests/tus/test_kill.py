"""SIGKILL of the gateway between PATCHes and during a PATCH, on localdisk + SQLite and on
S3 (moto) + PostgreSQL: a second gateway resumes at the acknowledged offset (never later),
and the payload ends with the same bytes and sha256 as sent."""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from db import Database
from storage import get_storage
from tests.e2e import Gateway
from tests.helpers import free_port, identity
from tests.tus.client import Answer, Tus
from tests.tus.stored import wait_available

MIB = 1024 * 1024


def localdisk_env(tmp_path: Path) -> dict[str, str]:
    return {"WORKDIR": str(tmp_path / "work"), "TUS_LEASE_SECONDS": "4"}


def s3_env(tmp_path: Path, moto_server: str, pg_url: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"WORKDIR": str(tmp_path / "work"), "TUS_LEASE_SECONDS": "4",
            "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": moto_server, "DATABASE_URL": pg_url,
            "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}",
            "URL_SIGNING_KEY": "kill-test"}


@pytest.fixture(params=["localdisk", pytest.param("s3", marks=[pytest.mark.s3,
                                                                pytest.mark.postgres])])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "localdisk":
        return localdisk_env(tmp_path)
    return s3_env(tmp_path, request.getfixturevalue("moto_server"),
                  request.getfixturevalue("pg_url"))


def stored(env: dict[str, str], request_id: str) -> bytes:
    settings = Settings.from_env(env)
    database = Database(settings.database_url)
    storage = get_storage(settings)
    try:
        row: dict[str, Any] = database.get_upload(request_id)  # type: ignore[assignment]
        reader = storage.open_reader(row["bucket"], row["object_key"])
        try:
            return reader.read()
        finally:
            reader.close()
    finally:
        storage.close()
        database.close()


def kill(gateway: Gateway) -> None:
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    assert gateway.process.wait(10) == -signal.SIGKILL


def start_patch(gateway: Gateway, path: str, offset: int, body: bytes, send: int) -> socket.socket:
    """A PATCH whose first ``send`` bytes of body are sent, the rest never."""
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"x-rh-identity: {identity()}\r\nUpload-Offset: {offset}\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body[:send])
    return sock


def patch_until_free(tus: Tus, path: str, offset: int, data: bytes) -> Answer:
    """PATCH, retrying while the dead gateway's lease runs out (423), like tus-js-client."""
    deadline = time.monotonic() + 30
    while True:
        answer = tus.patch(path, offset, data)
        if answer.status != 423 or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.mark.timeout(180)
def test_sigkill_between_and_during_patches(env: dict[str, str]) -> None:
    data = os.urandom(40 * MIB + 12345)
    sha256 = hashlib.sha256(data).hexdigest()
    first = Gateway({**env, "LISTEN_PORT": str(free_port())}).start()
    tus = Tus(first.base)
    created = tus.create(len(data), headers={"x-rh-insights-request-id": uuid.uuid4().hex})
    assert created.status == 201
    path = tus.path(created.header("Location"))
    rid = created.header("x-rh-insights-request-id")
    acked = int(tus.patch(path, 0, data[:9 * MIB + 3]).header("Upload-Offset"))
    assert acked == 9 * MIB + 3

    # 1. killed between PATCHes: the second gateway resumes exactly there
    kill(first)
    second = Gateway({**env, "LISTEN_PORT": str(free_port())}).start()
    tus = Tus(second.base)
    assert tus.offset(path) == acked
    answer = patch_until_free(tus, path, acked, data[acked:acked + 7 * MIB])
    assert answer.status == 204, answer
    acked = int(answer.header("Upload-Offset"))

    # 2. killed during a PATCH, 13 MiB of its 20 MiB body received: a third gateway
    #    resumes at the acknowledged offset or earlier, never later
    sock = start_patch(second, path, acked, data[acked:acked + 20 * MIB], 13 * MIB)
    time.sleep(1.0)
    kill(second)
    sock.close()
    third = Gateway({**env, "LISTEN_PORT": str(free_port())}).start()
    try:
        tus = Tus(third.base)
        offset = tus.offset(path)
        assert offset <= acked + 13 * MIB
        assert offset >= acked  # what was acknowledged is never lost
        answer = patch_until_free(tus, path, offset, data[offset:])
        assert answer.status == 204, answer
        assert int(answer.header("Upload-Offset")) == len(data)
        status = wait_available(third, rid)
        assert status["checksums"]["sha256"] == sha256 and status["size"] == len(data)
        assert stored(env, rid) == data
    finally:
        third.stop()
