"""Files straight to storage: the gateway hands out one URL per part (S3 presigned
UploadPart URLs on moto in server mode; the gateway's own signed part URLs on local disk),
the client PUTs the parts with requests and completes with their ETags; 3 files of 20 MB
with declared checksums, one wrong, are checksummed after the fact (on embedded defaults,
and on Kafka (mock cluster) + S3 (moto) + PostgreSQL, where the S3 ETag and the object
tags are checked with boto3)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from areas.jobs import TOPICS
from bus.topics import all_topics
from core.settings import Settings
from tests.areas.harness import Areas, by_name, real_env, sums
from tests.e2e import Gateway

MB = 1_000_000


def put_parts(start: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    size, done = start["part_size"], []
    with requests.Session() as session:
        session.trust_env = False
        for part in start["parts"]:
            n = part["part_number"]
            body = data[(n - 1) * size: n * size]
            response = session.put(part["url"], data=body, timeout=60)
            assert response.status_code == 200, response.text
            done.append({"part_number": n, "etag": response.headers["ETag"]})
    return done


def expected_etag(data: bytes, part_size: int) -> str:
    digests = [hashlib.md5(data[i:i + part_size]).digest()  # noqa: S324
               for i in range(0, len(data), part_size)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"  # noqa: S324


def stage_directly(areas: Areas, area_id: str, name: str, data: bytes,
                   **declared: str) -> dict[str, Any]:
    status, start = areas.call("POST", areas.file_url(area_id, name, "uploads"),
                               json={"size": len(data), **declared})
    assert status == 201, start
    parts = put_parts(start, data)
    status, file = areas.call("POST", start["complete_url"], json={"parts": parts})
    assert status == 201, file
    again = areas.call("POST", start["complete_url"], json={"parts": parts})
    assert again[0] == 200 and again[1]["version"] == file["version"]
    return start


def three_files_one_wrong(areas: Areas) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    area_id = areas.create()
    files = {f"lane{i}/R{i}.fastq.gz": os.urandom(20 * MB) for i in range(3)}
    starts = {}
    for i, (name, data) in enumerate(files.items()):
        declared = sums(data)
        if i == 1:
            declared["crc32c"] = "00000000"
        starts[name] = stage_directly(areas, area_id, name, data, sha256=declared["sha256"],
                                      crc32c=declared["crc32c"])
    area = areas.wait_checksummed(area_id)
    found = by_name(area)
    for i, (name, data) in enumerate(files.items()):
        checksums = found[name]["checksums"]
        assert {k: checksums[k] for k in ("sha256", "sha1", "crc32c")} == sums(data)
        part_size = starts[name]["part_size"]
        assert len(starts[name]["parts"]) == -(-len(data) // part_size) > 1
        assert checksums["s3_etag"] == expected_etag(data, part_size)
        assert found[name]["checksum_state"] == ("checksum_mismatch" if i == 1
                                                 else "checksummed"), found[name]
    return area_id, files, found


@pytest.mark.timeout(600)
def test_direct_upload_on_localdisk(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"), "URL_SIGNING_KEY": "t"}).start()
    try:
        areas = Areas(gateway)
        three_files_one_wrong(areas)
        area_id = areas.create(max_file_size=10 * MB)
        url = areas.file_url(area_id, "f", "uploads")
        assert areas.call("POST", url, json={"size": 10 * MB + 1})[0] == 413
        assert areas.call("POST", url, json={})[0] == 400
        assert areas.call("POST", areas.file_url(area_id, "../f", "uploads"),
                          json={"size": 1})[0] == 400
        # the parts hold other bytes than declared: refused, nothing recorded
        status, start = areas.call("POST", url, json={"size": 6 * MB})
        parts = put_parts(start, os.urandom(5 * MB))
        assert areas.call("POST", start["complete_url"], json={"parts": parts})[1]["error"] \
            == "size_mismatch"
        # a wrong ETag is refused and the upload stays open
        status, start = areas.call("POST", url, json={"size": 1000})
        data = os.urandom(1000)
        parts = put_parts(start, data)
        wrong = [{"part_number": 1, "etag": '"' + "0" * 32 + '"'}]
        assert areas.call("POST", start["complete_url"], json={"parts": wrong})[0] == 400
        areas.call("POST", areas.url(area_id, "lock"))
        assert areas.call("POST", start["complete_url"], json={"parts": parts})[0] == 409
        areas.call("POST", areas.url(area_id, "unlock"))
        assert areas.call("POST", start["complete_url"], json={"parts": parts})[0] == 201
        assert areas.wait_checksummed(area_id)["files"][0]["checksums"]["sha256"] \
            == sums(data)["sha256"]
    finally:
        assert gateway.stop() == 0


@pytest.mark.timeout(600)  # a loaded machine: an e2e run of several minutes
@pytest.mark.kafka
@pytest.mark.s3
@pytest.mark.postgres
def test_direct_upload_on_kafka_s3_postgres(tmp_path: Path, kafka_bootstrap: str,
                                            kafka_topics: Any, moto_server: str,
                                            pg_url: str) -> None:
    env = real_env(str(tmp_path / "work"), kafka_bootstrap, moto_server, pg_url)
    kafka_topics(all_topics(Settings.from_env(env)) + list(TOPICS))
    gateway = Gateway(env).start()
    try:
        areas = Areas(gateway)
        area_id, files, found = three_files_one_wrong(areas)
        s3 = boto3.client("s3", endpoint_url=moto_server)
        listed = s3.list_objects_v2(Bucket=env["S3_QUARANTINE"], Prefix=f"areas/{area_id}/")
        assert len(listed["Contents"]) == 3
        for item in listed["Contents"]:
            tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(
                Bucket=env["S3_QUARANTINE"], Key=item["Key"])["TagSet"]}
            assert item["ETag"].strip('"') == tags["s3_etag"]
            assert tags["sha256"] in {f["checksums"]["sha256"] for f in found.values()}
        assert areas.call("DELETE", areas.url(area_id))[0] == 202
        areas.wait(area_id, lambda a: a["state"] == "deleted")
        assert s3.list_objects_v2(Bucket=env["S3_QUARANTINE"], Prefix=f"areas/{area_id}/")[
            "KeyCount"] == 0
    finally:
        assert gateway.stop() == 0
