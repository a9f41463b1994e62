"""What a newcomer does, end to end in a real ``python app.py`` process: add providers to a
config file, start a job through the API, follow it, and see the payloads reach
``available``: on embedded defaults, and on Kafka (mock cluster) + S3 (moto) + PostgreSQL.
Also the puller as a role of its own beside a gateway."""
from __future__ import annotations

import gzip
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from bus.topics import all_topics
from core.settings import Settings
from tests.e2e import Gateway
from tests.fixtures.gpg import PASSPHRASE, Keyring
from tests.helpers import wait_for
from tests.pull.harness import entry, write_config
from tests.pull.sftpserver import SFTPTestServer
from tests.validators.test_obj import cube_obj

AUTH: dict[str, str] = {}  # the pulls key of the running test (pull_and_check)


def call(base: str, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(base + path, method=method, headers=AUTH,
                                     data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def stage(sftp: SFTPTestServer, keyring: Keyring, tmp_path: Path, env: dict[str, str],
          services: tuple[str, str] = ("testareno", "assets")) -> dict[str, str]:
    outgoing = sftp.root / "outgoing"
    (outgoing / "report one.csv").write_bytes(b"a,b\n1,2\n")
    (outgoing / "zusammenfassung-ü.csv.gz").write_bytes(gzip.compress(b"c,d\n3,4\n"))
    keyring.encrypt(gzip.compress(b"e,f\n5,6\n"), outgoing / "secret.csv.gz.gpg")
    (outgoing / "secret.csv.gz.gpg.sig").write_bytes(b"sig")
    (sftp.root / "meshes").mkdir()
    (sftp.root / "meshes" / "K001_Step1.obj").write_bytes(cube_obj())
    (tmp_path / "gpg-passphrase").write_text(PASSPHRASE + "\n")
    providers = {
        "lab": entry(sftp, steps=["decrypt", "gunzip"], gpg_home=str(keyring.home),
                     service=services[0],
                     gpg_passphrase_file=str(tmp_path / "gpg-passphrase"), completion="delete"),
        "meshes": entry(sftp, directory="/meshes", pattern="*.obj", service=services[1],
                        category="obj", completion="move", move_to="/meshes/done"),
    }
    config = write_config(tmp_path / "providers.yaml", providers)
    return {**env, "PULL_PROVIDERS": str(config), "TEST_SFTP_PASSWORD": sftp.password}


def pull_and_check(gateway: Gateway, sftp: SFTPTestServer, metrics_base: str | None) -> None:
    AUTH.clear()
    AUTH.update(gateway.api_key("pulls"))
    base = gateway.base
    for provider, expected in (("lab", 3), ("meshes", 1)):
        started = call(base, "POST", f"/api/v1/pulls/{provider}")
        job = wait_for(lambda: (j := call(base, "GET", started["url"]))["state"] in (  # noqa: B023
            "completed", "failed") and j, timeout=60)
        assert job and job["state"] == "completed", job
        assert job["files"]["ingested"] == expected, job
        request_ids = [r for item in job["items"] for r in item["request_ids"]]
        for request_id in request_ids:
            status = wait_for(lambda r=request_id: (  # type: ignore[misc]
                s := call(base, "GET", f"/api/v1/uploads/{r}"))[
                "status"] == "available" and s, timeout=60)
            assert status, call(base, "GET", f"/api/v1/uploads/{request_id}")
            received = status["timeline"][0]
            assert received["status"] == "received"
            assert received["message"].startswith(f"pulled from provider {provider}: /")
    jobs = call(base, "GET", "/api/v1/pulls/jobs")["jobs"]
    assert [j["provider"] for j in jobs][:2] == ["meshes", "lab"]  # newest first
    assert not (sftp.root / "outgoing" / "report one.csv").exists()  # deleted once durable
    assert (sftp.root / "meshes" / "done" / "K001_Step1.obj").exists()
    if metrics_base is None:
        return
    metrics = urllib.request.urlopen(metrics_base + "/metrics", timeout=10).read().decode()
    assert 'gateway_pull_files_total{outcome="ingested",provider="lab"} 3.0' in metrics
    assert 'gateway_pull_last_success_timestamp_seconds{provider="meshes"}' in metrics


def test_embedded_defaults(tmp_path: Path, sftp: SFTPTestServer, provider_keyring: Keyring) -> None:
    env = stage(sftp, provider_keyring, tmp_path, {"WORKDIR": str(tmp_path / "work")})
    gateway = Gateway(env).start()
    try:
        pull_and_check(gateway, sftp, gateway.base)
    finally:
        assert gateway.stop() == 0


@pytest.mark.kafka
@pytest.mark.s3
@pytest.mark.postgres
def test_kafka_s3_postgres_and_a_puller_of_its_own(
        tmp_path: Path, sftp: SFTPTestServer, provider_keyring: Keyring, kafka_bootstrap: str,
        kafka_topics: Any, moto_server: str, pg_url: str) -> None:
    suffix = uuid.uuid4().hex[:10]
    env = {"WORKDIR": str(tmp_path / "work"), "KAFKAMQ": kafka_bootstrap,
           "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": moto_server, "S3_QUARANTINE": f"q-{suffix}",
           "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}", "DATABASE_URL": pg_url,
           "URL_SIGNING_KEY": "e2e",
           # services of this test's own: validator groups and topics no other test used
           # (a dead announcement another test left would hold the validators' workers)
           "VALID_UPLOAD_TYPES": f"lab{suffix},mesh{suffix}",
           "VALIDATORS": f"lab{suffix}:test,mesh{suffix}:obj"}
    kafka_topics(all_topics(Settings.from_env(env)))
    env = stage(sftp, provider_keyring, tmp_path, env, (f"lab{suffix}", f"mesh{suffix}"))
    # every role in one process (its puller included), and a second puller of its own:
    # they share the providers through the lease in PostgreSQL
    gateway = Gateway(env).start()
    puller = Gateway({**env, "WORKDIR": str(tmp_path / "puller")}, ["puller"])
    try:
        puller.start()
        pull_and_check(gateway, sftp, None)
        # the puller's own port serves the jobs API (and /metrics) too
        assert len(call(puller.base, "GET", "/api/v1/pulls/jobs?provider=lab")["jobs"]) == 1
        assert b"gateway_pull_files_total" in urllib.request.urlopen(puller.base + "/metrics").read()
    finally:
        for process in (puller, gateway):
            if process.process is not None:
                assert process.stop() == 0
