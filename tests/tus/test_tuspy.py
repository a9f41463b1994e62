"""tuspy (PyPI), the Python tus client, against a real gateway: a 50 MB upload in 5 MiB
chunks whose connection is cut mid-chunk and resumed from HEAD, per-chunk checksums, and a
wrong checksum refused with 460."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from tusclient import client
from tusclient.exceptions import TusUploadFailed
from tusclient.uploader import Uploader  # type: ignore[attr-defined]

from tests.e2e import Gateway
from tests.helpers import identity
from tests.tus.client import CONTENT_TYPE, CutProxy, Tus
from tests.tus.stored import stored_bytes, wait_available

CHUNK = 5 * 1024 * 1024
META = {"filetype": CONTENT_TYPE, "filename": "mesh.tgz"}


def workdir(gateway: Gateway) -> Path:
    return Path(gateway.env["WORKDIR"])


def request_id_of(tus: Tus, url: str) -> str:
    answer = tus.head(tus.path(url))
    assert answer.status == 200
    return answer.header("x-rh-insights-request-id") or ""


def test_50mb_in_5mib_chunks_cut_mid_chunk_resumes_from_head(gateway: Gateway, tus: Tus) -> None:
    data = os.urandom(50_000_000)
    cut_at = 3 * CHUNK + CHUNK // 2 + 12345  # inside the fourth PATCH's body
    proxy = CutProxy(gateway.port, cut_after=cut_at)
    try:
        tus_client = client.TusClient(f"http://127.0.0.1:{proxy.port}/api/v1/tus/",
                                      headers={"x-rh-identity": identity()})
        # each retry asks HEAD for the offset first; a HEAD that comes before the server
        # has even read the cut request's headers gets the offset before it, and the
        # PATCH that follows a 409: hence a second retry (README, decisions)
        uploader = tus_client.uploader(file_stream=io.BytesIO(data), chunk_size=CHUNK,
                                       metadata=META, retries=2, retry_delay=0)
        uploader.upload()
    finally:
        proxy.close()
    assert proxy.cuts == 1
    log = gateway.log.read_text()
    upload_id = str(uploader.url).rsplit("/", 1)[-1]
    # the server kept what arrived before the cut, and tuspy asked HEAD where to go on
    assert "client went away; kept" in log
    assert f"200 HEAD /api/v1/tus/{upload_id}" in log
    rid = request_id_of(tus, uploader.url)
    status = wait_available(gateway, rid)
    assert status["size"] == len(data)
    assert status["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored_bytes(workdir(gateway), rid) == data
    timeline = [e["status"] for e in status["timeline"]]
    assert timeline[:4] == ["created", "receiving", "stored", "announced"]


def test_upload_checksum_per_chunk(gateway: Gateway, tus: Tus) -> None:
    data = os.urandom(12 * 1024 * 1024 + 3)
    tus_client = client.TusClient(gateway.base + "/api/v1/tus/",
                                  headers={"x-rh-identity": identity()})
    uploader = tus_client.uploader(file_stream=io.BytesIO(data), chunk_size=CHUNK,
                                   metadata=META, upload_checksum=True)
    uploader.upload()
    rid = request_id_of(tus, uploader.url)
    assert wait_available(gateway, rid)["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored_bytes(workdir(gateway), rid) == data


class LyingUploader(Uploader):
    """Sends a sha1 of something else: the server must refuse the chunk."""

    CHECKSUM_ALGORITHM_PAIR = ("sha1", lambda chunk: hashlib.sha1(chunk + b"!"))  # type: ignore[assignment,misc]  # noqa: S324


def test_wrong_checksum_gets_460_and_the_offset_stays(gateway: Gateway, tus: Tus) -> None:
    data = os.urandom(3 * 1024 * 1024)
    tus_client = client.TusClient(gateway.base + "/api/v1/tus/",
                                  headers={"x-rh-identity": identity()})
    good = tus_client.uploader(file_stream=io.BytesIO(data), chunk_size=1024 * 1024,
                               metadata=META, upload_checksum=True)
    good.upload_chunk()  # the first MiB, correctly summed
    lying = LyingUploader(file_stream=io.BytesIO(data), url=good.url, client=tus_client,
                          chunk_size=1024 * 1024, upload_checksum=True)
    assert lying.offset == 1024 * 1024
    with pytest.raises(TusUploadFailed) as failure:
        lying.upload_chunk()
    assert failure.value.status_code == 460
    assert tus.offset(tus.path(good.url)) == 1024 * 1024
    good.offset = tus.offset(tus.path(good.url))
    good.upload()
    rid = request_id_of(tus, good.url)
    assert stored_bytes(workdir(gateway), rid) == data
