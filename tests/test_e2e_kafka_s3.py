"""The whole loop on real parts: Kafka (librdkafka's mock cluster, or KAFKAMQ), S3 (moto's
server over HTTP) and PostgreSQL (127.0.0.1:5432)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bus.topics import all_topics
from core.settings import Settings
from tests.e2e import Gateway, check_round_trip
from tests.helpers import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.postgres]


@pytest.fixture
def real_env(tmp_path: Path, kafka_bootstrap: str, kafka_topics, moto_server: str,  # type: ignore[no-untyped-def]
             pg_url: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    env = {
        "WORKDIR": str(tmp_path / "work"),
        "KAFKAMQ": kafka_bootstrap,
        "STORAGE_DRIVER": "s3",
        "S3_ENDPOINT_URL": moto_server,
        "S3_QUARANTINE": f"q-{suffix}",
        "S3_PERM": f"p-{suffix}",
        "S3_REJECT": f"r-{suffix}",
        "DATABASE_URL": pg_url,
    }
    kafka_topics(all_topics(Settings.from_env(env)))
    return env


def test_success_path(real_env: dict[str, str]) -> None:
    gateway = Gateway(real_env).start()
    try:
        check_round_trip(gateway, Settings.from_env(gateway.env), "success")
    finally:
        assert gateway.stop() == 0


def test_failure_path_rejects(real_env: dict[str, str]) -> None:
    gateway = Gateway({**real_env, "TEST_VALIDATOR_VERDICT": "failure"}).start()
    try:
        status = check_round_trip(gateway, Settings.from_env(gateway.env), "failure")
        assert status["reason"] == "test validator answers failure"
    finally:
        assert gateway.stop() == 0


def test_broker_outage_loses_nothing(real_env: dict[str, str], kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    """Uploads accepted while every broker is down are announced once they are back."""
    gateway = Gateway(real_env, ["gateway"]).start()
    try:
        kafka_cluster.set_down()
        ids = []
        for n in range(5):
            code, answer = gateway.upload(f"during outage {n}".encode())
            assert code == 202, answer
            ids.append(answer["request_id"])
        assert all(gateway.status(i)["status"] == "stored" for i in ids)
        kafka_cluster.set_up()
        assert wait_for(lambda: all(gateway.status(i)["status"] == "announced" for i in ids), 60)
    finally:
        kafka_cluster.set_up()
        assert gateway.stop() == 0
