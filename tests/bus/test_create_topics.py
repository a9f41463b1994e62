"""create_topics.py against librdkafka's mock cluster (issue 12 item 6): what it can do
there and what it cannot, and its exit status.

The mock does not implement CreateTopics, so a topic that does not exist cannot be
created there: the script must say so and exit 1 (it printed "topic ready" and exited 0,
having created nothing). Topics made with the mock's own API (as auto-creation would) are
verified: partition count and replicas against what was asked, from the arguments or
from TOPIC_PARTITIONS / TOPIC_REPLICATION_FACTOR.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.kafka_mock import MockKafkaCluster
from core.settings import Settings
from create_topics import topics as every_topic

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster().start(brokers=1) as mock:
        yield mock


def run(bootstrap: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("TOPIC_")}
    environment.update(KAFKAMQ=bootstrap, VALID_UPLOAD_TYPES="testareno",
                       WORKDIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "create_topics.py", "--timeout", "5", *args],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


def topics(tmp_path: Path) -> list[str]:
    return every_topic(Settings.from_env({"WORKDIR": str(tmp_path),
                                          "VALID_UPLOAD_TYPES": "testareno"}))


def test_cannot_create_on_the_mock_and_says_so(cluster: MockKafkaCluster, tmp_path: Path) -> None:
    result = run(cluster.bootstrap, tmp_path, "--partitions", "4")
    assert result.returncode == 1, result
    assert "topic ready" not in result.stdout
    for topic in topics(tmp_path):
        assert f"topic NOT ready: {topic}: could not be created: " in result.stderr
    assert "not supported" in result.stderr  # the broker's own reason
    assert f"{len(topics(tmp_path))} of {len(topics(tmp_path))} topic(s) not ready" in result.stderr


def test_existing_topics_are_verified_idempotently(cluster: MockKafkaCluster,
                                                   tmp_path: Path) -> None:
    for topic in topics(tmp_path):
        cluster.create_topic(topic, partitions=4)
    for _ in range(2):
        result = run(cluster.bootstrap, tmp_path, "--partitions", "4", "--replication-factor", "1")
        assert result.returncode == 0, result
        assert result.stdout.count("exists (4 partition(s), 1 replica(s))") == len(topics(tmp_path))
    assert run(cluster.bootstrap, tmp_path, "--partitions", "2").returncode == 0  # more is fine


def test_too_few_partitions_or_replicas_fail(cluster: MockKafkaCluster, tmp_path: Path) -> None:
    for topic in topics(tmp_path):
        cluster.create_topic(topic, partitions=2)
    result = run(cluster.bootstrap, tmp_path, "--partitions", "4")
    assert result.returncode == 1
    assert "has 2 partition(s), 1 replica(s), 4 partitions asked for" in result.stderr
    from_env = run(cluster.bootstrap, tmp_path, TOPIC_PARTITIONS="4")
    assert from_env.returncode == 1 and "4 partitions asked for" in from_env.stderr
    assert run(cluster.bootstrap, tmp_path, TOPIC_PARTITIONS="2").returncode == 0
    replicas = run(cluster.bootstrap, tmp_path, "--partitions", "2", "--replication-factor", "3")
    assert replicas.returncode == 1 and "replication factor 3 asked for" in replicas.stderr


def test_bad_arguments_and_unreachable_brokers(tmp_path: Path) -> None:
    bad = run("127.0.0.1:9", tmp_path, "--partitions", "0")
    assert bad.returncode == 2 and "--partitions" in bad.stderr
    assert run("127.0.0.1:9", tmp_path, TOPIC_PARTITIONS="four").returncode == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = run(f"127.0.0.1:{port}", tmp_path, "--timeout", "2")
    assert down.returncode == 1 and "cannot be reached" in down.stderr
