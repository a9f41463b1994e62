"""Issue 6, item 8: storage faults. S3 errors, resets and hangs (a fault-injecting proxy in
front of moto) and a full disk for localdisk (a 2 MiB tmpfs when it can be mounted, else
an injected ENOSPC): the client gets 503, nothing half-written stays, the gateway keeps
serving."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from core.settings import Settings
from tests.e2e import Gateway
from tests.faults.s3proxy import FaultProxy
from tests.faults.tools import Result, bucket_files, upload, uploads_table
from tests.helpers import wait_for

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024


def assert_503(result: Result) -> None:
    assert result.status == 503, result
    assert result.body.get("error") == "storage_unavailable", result


def assert_202(result: Result) -> str:
    assert result.status == 202, result
    assert result.request_id
    return result.request_id


# -- S3 ----------------------------------------------------------------------------------

def is_put(method: str, path: str) -> bool:
    return method == "PUT" and "partNumber=" not in path


def is_part(method: str, path: str) -> bool:
    return method == "PUT" and "partNumber=" in path


def is_complete(method: str, path: str) -> bool:
    return method == "POST" and "uploadId=" in path


S3_FAULTS = [
    # (name, size of the file part, fault)
    ("every request 503 SlowDown", 10_000, lambda m, p: "503"),
    ("PutObject 500 InternalError", 10_000, lambda m, p: "500" if is_put(m, p) else None),
    ("PutObject hangs, then the connection drops", 10_000,
     lambda m, p: "stall" if is_put(m, p) else None),
    ("PutObject connection reset", 10_000, lambda m, p: "reset" if is_put(m, p) else None),
    ("UploadPart 503 (multipart)", 9 * MiB, lambda m, p: "503" if is_part(m, p) else None),
    ("CompleteMultipartUpload 500 (multipart)", 9 * MiB,
     lambda m, p: "500" if is_complete(m, p) else None),
    ("second UploadPart hangs (multipart)", 9 * MiB,
     lambda m, p: "stall" if is_part(m, p) and "partNumber=2" in p else None),
]


@pytest.fixture
def s3_gateway(tmp_path: Path, moto_server: str) -> Iterator[tuple[Gateway, FaultProxy, dict[str, str]]]:
    proxy = FaultProxy(moto_server).start()
    suffix = uuid.uuid4().hex[:10]
    env = {"WORKDIR": str(tmp_path / "work"), "STORAGE_DRIVER": "s3",
           "S3_ENDPOINT_URL": proxy.url, "S3_QUARANTINE": f"q-{suffix}",
           "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}"}
    gateway = Gateway(env, ["gateway"]).start()
    try:
        yield gateway, proxy, env
    finally:
        proxy.fault = lambda m, p: None
        try:
            assert gateway.stop() == 0
        finally:
            proxy.stop()


@pytest.mark.s3
@pytest.mark.timeout(180)
def test_s3_faults_give_503_leave_nothing_and_the_gateway_keeps_serving(
        s3_gateway: tuple[Gateway, FaultProxy, dict[str, str]], moto_server: str) -> None:
    gateway, proxy, env = s3_gateway
    s3 = boto3.client("s3", endpoint_url=moto_server)
    quarantine = env["S3_QUARANTINE"]
    accepted = {assert_202(upload(gateway.port, os.urandom(5000)))}
    proxy.stall_seconds = 0.75
    for name, size, fault in S3_FAULTS:
        proxy.injected.clear()
        proxy.fault = fault
        result = upload(gateway.port, os.urandom(size), timeout=90)
        proxy.fault = lambda m, p: None
        assert proxy.injected, f"{name}: no fault was injected"
        assert result.status == 503, (name, result)
        assert result.body.get("error") == "storage_unavailable", (name, result)
        # nothing half-written: no unfinished multipart upload, no unrecorded object
        uploads = s3.list_multipart_uploads(Bucket=quarantine).get("Uploads", [])
        assert not uploads, (name, uploads)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=quarantine).get("Contents", [])}
        known = {row["object_key"] for row in uploads_table(Path(env["WORKDIR"])).values()}
        assert keys == known, name
        # the gateway keeps serving
        accepted.add(assert_202(upload(gateway.port, os.urandom(size), timeout=90)))
    rows = uploads_table(Path(env["WORKDIR"]))
    assert set(rows) == accepted
    assert all(row["status"] in ("stored", "announced") for row in rows.values())


# -- localdisk: a full disk -----------------------------------------------------------------

class InjectedGateway(Gateway):
    """``python tests/faults/enospc_app.py``: app.py with an ENOSPC switch."""

    def start(self) -> InjectedGateway:
        Path(self.env["WORKDIR"]).mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "enospc_app.py"), *self.role], cwd=HERE.parents[1],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        if not wait_for(self._healthy, timeout=30):
            self.stop()
            raise AssertionError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")
        return self


def health_of(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(gateway.base + "/api/v1/health", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                pass
    return filler


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_full_disk_gives_503_leaves_nothing_and_the_gateway_keeps_serving(
        tmp_path: Path, how: str) -> None:
    workdir = tmp_path / "work"
    disk = workdir / "disk"
    if how == "tmpfs" and not mount_tmpfs(disk, "2m"):
        pytest.skip("cannot mount a tmpfs here; the injected variant covers a full disk")
    flag = tmp_path / "enospc"
    env = {"WORKDIR": str(workdir), "S3_QUARANTINE": "disk/quarantine",
           "S3_PERM": "disk/perm", "S3_REJECT": "disk/reject", "ENOSPC_FLAG": str(flag)}
    settings = Settings.from_env(env)
    cls = Gateway if how == "tmpfs" else InjectedGateway
    gateway = cls(env, ["gateway"]).start()
    try:
        accepted = {assert_202(upload(gateway.port, os.urandom(100_000)))}
        if how == "tmpfs":
            # larger than the whole disk: fails while streaming
            assert_503(upload(gateway.port, os.urandom(3 * MiB)))
            filler = fill(disk)
        else:
            flag.touch()
            assert_503(upload(gateway.port, os.urandom(3 * MiB)))
        # a small upload on a full disk fails at commit
        assert_503(upload(gateway.port, os.urandom(20_000)))
        # and health says so (issue 10 item 7: it said ok), after its next check
        assert wait_for(lambda: (h := health_of(gateway))[0] == 503
                        and "storage" in h[1]["down"], 15), health_of(gateway)
        ready = urllib.request.Request(gateway.base + "/readyz")
        try:
            urllib.request.urlopen(ready, timeout=10).close()
            raise AssertionError("/readyz said ready with storage down")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and json.loads(exc.read())["down"] == ["storage"]
        for bucket in settings.buckets.values():
            assert bucket_files(workdir, bucket)[1] == [], f"{bucket}/.incomplete not empty"
        objects, _ = bucket_files(workdir, settings.s3_quarantine)
        rows = uploads_table(workdir)
        assert {p.name for p in objects} == {r["object_key"] for r in rows.values()}
        assert set(rows) == accepted
        if how == "tmpfs":
            filler.unlink()
        else:
            flag.unlink()
        assert wait_for(lambda: health_of(gateway)[0] == 200, 15), health_of(gateway)
        accepted.add(assert_202(upload(gateway.port, os.urandom(500_000))))
        assert set(uploads_table(workdir)) == accepted
    finally:
        try:
            assert gateway.stop() == 0
        finally:
            if how == "tmpfs":
                subprocess.run(["umount", "-l", str(disk)], check=False)
