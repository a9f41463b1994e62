"""Direct uploads on localdisk: the direct-upload contract through the gateway's signed
part URLs (areas/parts.py on a server of its own), and what those URLs refuse."""
from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from areas.parts import routes
from core.settings import Settings
from storage.localdisk import LocalDiskStorage
from tests.areas.server import ThreadServer, bound_socket
from tests.contracts.direct_contract import BUCKET, DirectContract, new_key, put_part
from tests.contracts.storage_contract import read_all, tamper


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[LocalDiskStorage]:
    sock = bound_socket()
    port = sock.getsockname()[1]
    settings = Settings.from_env({"WORKDIR": str(tmp_path), "URL_SIGNING_KEY": "direct-key",
                                  "PUBLIC_URL": f"http://127.0.0.1:{port}"})
    driver = LocalDiskStorage(settings)
    server = ThreadServer(sock, driver, settings, routes).start()
    yield driver
    server.stop()


class TestLocalDiskDirect(DirectContract):
    pass


def put_status(url: str, data: bytes) -> int:
    try:
        put_part(url, data)
        return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_part_urls_refuse_forgery_expiry_and_excess(storage: LocalDiskStorage) -> None:
    key = new_key()
    state = storage.start_direct(BUCKET, key)
    url = storage.direct_part_url(BUCKET, key, state, 1, 10, 600)
    assert put_status(tamper(url), b"x") == 403
    assert put_status(url.replace("max=10", "max=99"), b"x" * 20) == 403
    assert put_status(url.replace("/1?", "/2?"), b"x") == 403
    expired = storage.direct_part_url(BUCKET, key, state, 1, 10, -1)
    assert put_status(expired, b"x") == 403
    assert put_status(url, b"x" * 11) == 413
    assert put_status(url, b"x" * 10) == 200
    assert [p.size for p in storage.direct_parts(BUCKET, key, state)] == [10]


def test_part_without_length_is_refused(storage: LocalDiskStorage) -> None:
    key = new_key()
    state = storage.start_direct(BUCKET, key)
    parsed = urlsplit(storage.direct_part_url(BUCKET, key, state, 1, 1024, 600))
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    connection.putrequest("PUT", f"{parsed.path}?{parsed.query}")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"3\r\nabc\r\n0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 411
    assert b"length_required" in response.read()
    connection.close()
    assert storage.direct_parts(BUCKET, key, state) == []


def test_part_cut_short_leaves_nothing(storage: LocalDiskStorage) -> None:
    key = new_key()
    state = storage.start_direct(BUCKET, key)
    parsed = urlsplit(storage.direct_part_url(BUCKET, key, state, 1, 1 << 20, 600))
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    connection.putrequest("PUT", f"{parsed.path}?{parsed.query}")
    connection.putheader("Content-Length", str(1 << 20))
    connection.endheaders()
    connection.send(b"z" * 1000)
    connection.close()
    import time

    time.sleep(0.5)
    assert storage.direct_parts(BUCKET, key, state) == []
    directory = Path(storage._root(BUCKET)) / ".direct" / state["upload_id"]
    assert sorted(p.name for p in directory.iterdir()) == ["key"]
    url = storage.direct_part_url(BUCKET, key, state, 1, 1 << 20, 600)
    storage.complete_direct(BUCKET, key, state, [(1, put_part(url, b"whole"))])
    assert read_all(storage, BUCKET, key) == b"whole"
