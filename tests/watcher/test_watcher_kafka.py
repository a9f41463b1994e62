"""The watcher on real parts: Kafka (librdkafka's mock cluster, or KAFKAMQ), S3 (moto's
server) and PostgreSQL; and a broker outage while files are dropped."""
from __future__ import annotations

import gzip
import hashlib
import uuid
from pathlib import Path

import pytest

from bus.topics import all_topics
from core.settings import Settings
from tests.helpers import wait_for
from tests.watcher.harness import Harness, read_topics, watch_env

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.postgres]
TOPICS = ["platform.upload.assets", "platform.asset-transfer"]


@pytest.fixture
def real_env(tmp_path: Path, kafka_bootstrap: str, kafka_topics, moto_server: str,  # type: ignore[no-untyped-def]
             pg_url: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    env = watch_env(tmp_path, KAFKAMQ=kafka_bootstrap, STORAGE_DRIVER="s3",
                    S3_ENDPOINT_URL=moto_server, S3_QUARANTINE=f"q-{suffix}",
                    S3_PERM=f"p-{suffix}", S3_REJECT=f"r-{suffix}", DATABASE_URL=pg_url)
    kafka_topics(all_topics(Settings.from_env(env)))
    return env


def mine(found: list[dict], names: set[str]) -> list[dict]:  # type: ignore[type-arg]
    return [m for m in found if m.get("filename") in names or m.get("file_name") in names]


def test_obj_files_on_kafka_s3_postgres(real_env: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    meshes = {f"K{tag}_Step{i}.obj": b"v %d 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\n" % i for i in range(3)}
    with Harness(real_env) as h:
        for name, data in meshes.items():
            (h.root / name).write_bytes(data)
        assert wait_for(lambda: len(h.files(h.processed)) == 3, 20)
        found = read_topics(h.settings, TOPICS, lambda m: len(mine(m, set(meshes))) >= 9, 30)
        ours = mine(found, set(meshes))
        announcements = [m for m in ours if m["topic"] == "platform.upload.assets"]
        assert {m["filename"] for m in announcements} == set(meshes)
        for message in announcements:
            assert message["compression"] == "gzip"
            content = meshes[message["filename"]]
            assert message["uncompressed"]["sha256"] == hashlib.sha256(content).hexdigest()
            assert h.services is not None
            [row] = [r for r in h.uploads() if r["request_id"] == message["request_id"]]
            with h.services.storage.open_reader("quarantine", row["object_key"]) as reader:
                stored = reader.read()
            assert gzip.decompress(stored) == content
            assert message["checksums"]["sha256"] == hashlib.sha256(stored).hexdigest()
        events = [m for m in ours if m["topic"] == "platform.asset-transfer"]
        for name, data in meshes.items():
            kinds = [m["type"] for m in events if m["file_name"] == name]
            assert kinds == ["sdc_asset_transfer_file_created", "sdc_asset_transfer_file_uploaded"]
            sha1 = hashlib.sha1(data).hexdigest()  # noqa: S324
            assert {m["uncompressed_sha1_hash"] for m in events if m["file_name"] == name} == {sha1}


def test_broker_outage_files_still_move_then_are_announced(real_env: dict[str, str],
                                                          kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    """Stored and recorded in the outbox is durable: the files move to Processed/ while
    the brokers are down, and are announced once they are back."""
    name = f"Down{uuid.uuid4().hex[:8]}_Step1.obj"
    with Harness(real_env) as h:
        kafka_cluster.set_down()
        try:
            (h.root / name).write_bytes(b"v 1 1 1\n")
            assert wait_for(lambda: h.files(h.processed) == [name], 20)
            [row] = [r for r in h.uploads() if r["filename"] == name]
            assert row["status"] == "stored"
        finally:
            kafka_cluster.set_up()
        found = read_topics(h.settings, TOPICS, lambda m: len(mine(m, {name})) >= 3, 60)
        assert len(mine(found, {name})) == 3
