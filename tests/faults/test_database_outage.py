"""Issue 10 item 7: with PostgreSQL unreachable (a TCP proxy in front of it, cut), the
read endpoints answer 503 ``service_unavailable``, not 500, and recover without a
restart."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e import Gateway
from tests.faults.tcpproxy import TcpProxy
from tests.helpers import wait_for

pytestmark = [pytest.mark.postgres]


def call(gateway: Gateway, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(gateway.base + path, data=data, headers=gateway.auth,
                                     method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def proxied_gateway(tmp_path: Path, pg_url: str) -> Iterator[tuple[Gateway, TcpProxy]]:
    proxy = TcpProxy("127.0.0.1", 5432).start()
    host, name = pg_url.rsplit("@", 1)[0], pg_url.rsplit("/", 1)[1]
    env = {"WORKDIR": str(tmp_path / "work"),
           "DATABASE_URL": f"{host}@127.0.0.1:{proxy.port}/{name}"}
    gateway = Gateway(env, ["gateway"]).start()
    try:
        yield gateway, proxy
    finally:
        proxy.restore()
        try:
            assert gateway.stop() == 0
        finally:
            proxy.stop()


@pytest.mark.timeout(120)
def test_read_endpoints_answer_503_while_the_database_is_down(
        proxied_gateway: tuple[Gateway, TcpProxy]) -> None:
    gateway, proxy = proxied_gateway
    gateway.auth = gateway.api_key("staff", "status")
    code, answer = gateway.upload(b"payload")
    assert code == 202, answer
    request_id = answer["request_id"]
    plan = str(uuid.uuid4())
    reads = [f"/api/v1/uploads/{request_id}", "/api/v1/asset-transfers?case_number=C1",
             f"/api/v1/treatment-plans/{plan}"]
    assert [call(gateway, path)[0] for path in reads] == [200, 200, 404]
    proxy.cut()
    for path in reads:
        code, body = call(gateway, path)
        assert (code, body.get("error")) == (503, "service_unavailable"), (path, code, body)
    code, body = call(gateway, f"/api/v1/treatment-plans/{plan}/asset-transfers",
                      {"transfer_ids": [1]})
    assert (code, body.get("error")) == (503, "service_unavailable"), body
    assert wait_for(lambda: (r := call(gateway, "/api/v1/health"))[0] == 503
                    and "database" in r[1]["down"], 15), call(gateway, "/api/v1/health")
    proxy.restore()
    assert call(gateway, reads[0])[0] == 200
    log = gateway.log.read_text()
    assert "Uncaught exception" not in log, log[-3000:]
