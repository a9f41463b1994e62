"""Issue 14: ``python app.py gateway --workers N`` runs N gateway processes on one port
(SO_REUSEPORT) under the supervisor (core/supervisor.py): both answer uploads, SIGTERM to
the supervisor drains the in-flight uploads of every worker and exits 0, and a worker
that dies is started again."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.e2e import Gateway
from tests.fixtures.db import PG_ADMIN_URL
from tests.helpers import multipart, wait_for

STARTED = re.compile(r"started (gateway-\d+) \(pid (\d+)\)")
SERVED = re.compile(r"(gateway-\d+)\[(\d+)\] upload\.access 202 POST")


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"gw_workers_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def workers(gateway: Gateway) -> dict[str, int]:
    """The latest pid of each worker the supervisor started."""
    return {name: int(pid) for name, pid in STARTED.findall(gateway.log.read_text())}


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def serving_pid(port: int, client_port: int, pids: list[int]) -> int | None:
    """The process holding the server side of the connection from ``client_port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.rsplit(":", 1)[1], 16) == port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port):
                inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        if inode in _socket_inodes(pid):
            return pid
    return None


def start_upload(gateway: Gateway, body: bytes, ctype: str) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    connection.putrequest("POST", "/api/v1/upload")
    connection.putheader("Content-Type", ctype)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    connection.send(body[:HEAD])
    return connection


HEAD = 1_600_000  # more than the ingest path's first block: its object is open by then


def partial_objects(workdir: Path) -> int:
    """Objects being written (storage/localdisk.py: ``.incomplete/*.part-*``)."""
    return sum(1 for d in workdir.rglob(".incomplete") for _ in d.glob("*.part-*"))


def uploads_per_worker(gateway: Gateway) -> dict[str, set[int]]:
    served: dict[str, set[int]] = {}
    for name, pid in SERVED.findall(gateway.log.read_text()):
        served.setdefault(name, set()).add(int(pid))
    return served


@pytest.mark.postgres
def test_two_workers_on_postgres_both_serve_and_sigterm_drains_both(
        tmp_path: Path, fresh_pg: str) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"), "DATABASE_URL": fresh_pg},
                      ["gateway", "--workers", "2"]).start()
    try:
        assert wait_for(lambda: len(workers(gateway)) == 2, 30)
        pids = workers(gateway)
        # both processes answer uploads (each request on a new connection)
        for _ in range(200):
            code, _answer = gateway.upload(b"small upload")
            assert code == 202
            if len(uploads_per_worker(gateway)) == 2:
                break
        served = uploads_per_worker(gateway)
        assert set(served) == {"gateway-1", "gateway-2"}, served
        assert {pid for found in served.values() for pid in found} == set(pids.values())

        # slow uploads in flight on both workers, then SIGTERM to the supervisor
        body, ctype = multipart(b"s" * 3_000_000)
        connections: list[http.client.HTTPConnection] = []
        holders: set[int] = set()
        while holders != set(pids.values()):
            assert len(connections) < 64, holders
            connection = start_upload(gateway, body, ctype)
            connections.append(connection)
            assert connection.sock is not None
            client_port = connection.sock.getsockname()[1]
            holder = wait_for(lambda port=client_port: serving_pid(  # type: ignore[misc]
                gateway.port, port, list(pids.values())), 10)
            assert holder, "no worker holds the connection"
            holders.add(holder)
        # every upload is being received (its object open) before the signal
        assert wait_for(lambda: partial_objects(tmp_path / "work") == len(connections), 30)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        for start in range(HEAD, len(body), 50_000):
            for connection in connections:
                connection.send(body[start:start + 50_000])
        request_ids = []
        for connection in connections:
            response = connection.getresponse()
            assert response.status == 202, response.read()
            request_ids.append(json.loads(response.read())["request_id"])
        assert gateway.process.wait(60) == 0
        for pid in pids.values():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
                f"/proc/{pid}/status").read_text()
        engine = create_engine(fresh_pg.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                stored = conn.execute(text("SELECT request_id FROM uploads WHERE request_id "
                                           "= ANY(:ids)"), {"ids": request_ids}).scalars().all()
        finally:
            engine.dispose()
        assert sorted(stored) == sorted(request_ids)
    finally:
        gateway.stop()


def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}, ["gateway", "--workers", "2"]).start()
    try:
        assert wait_for(lambda: len(workers(gateway)) == 2, 30)
        killed = workers(gateway)["gateway-1"]
        os.kill(killed, signal.SIGKILL)
        assert wait_for(lambda: workers(gateway)["gateway-1"] != killed, 30), \
            gateway.log.read_text()[-3000:]
        assert "gateway-1 (exit -9) died; restarting it" in gateway.log.read_text()
        restarted = workers(gateway)["gateway-1"]
        assert wait_for(lambda: f"gateway-1[{restarted}] app gateway listening"
                        in gateway.log.read_text(), 30)
        for _ in range(20):
            assert gateway.upload(b"after the restart")[0] == 202
    finally:
        assert gateway.stop() == 0


def test_workers_need_role_gateway(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.e2e import ROOT
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "bundler", "--workers", "2"],
                          cwd=ROOT, env={**os.environ, "WORKDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers/WEB_CONCURRENCY is for role gateway" in done.stderr
