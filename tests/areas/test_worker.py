"""The checksum and deletion workers called directly on real storage (local disk, and S3
on moto) and a real database: checksums match well-kept implementations (hashlib, the
crc32c package, S3's own ETag), a deletion that overtakes a checksum leaves nothing
recorded and nothing stored, and a redelivered job changes nothing."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import boto3
import crc32c
import pytest
import requests
from prometheus_client import REGISTRY
from sqlalchemy import select

from areas import sets, store
from areas.api import object_key, put_part_size
from areas.jobs import WORK_TOPIC, checksum_job
from areas.validation import STALLED, SetValidator
from areas.worker import AreaWork, Checksummer, UploadSweeper
from core.consumer import MalformedMessage
from core.services import Services
from core.settings import Settings
from db.schema import outbox
from storage.direct import direct_uploads, gateway_parts


@pytest.fixture(params=["localdisk", pytest.param("s3", marks=[pytest.mark.s3,
                                                                 pytest.mark.postgres])])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    if request.param == "s3":  # S3 on moto and PostgreSQL
        s3 = request.getfixturevalue("s3_settings")
        settings = dataclasses.replace(s3, database_url=request.getfixturevalue("pg_url"))
    else:
        settings = Settings.from_env({"WORKDIR": str(tmp_path), "URL_SIGNING_KEY": "k"})
    built = Services.build(settings)
    yield built
    built.close()


def stage(services: Services, area_id: str, name: str, data: bytes,
          declared: dict[str, str] | None = None) -> tuple[store.FileVersion, dict]:
    key = object_key(area_id)
    writer = services.storage.open_writer("quarantine", key)
    writer.write(data)
    writer.commit()
    file, _ = store.record_file(services.database, area_id, name, key, len(data),
                                put_part_size(len(data)), declared or {})
    return file, checksum_job(file).value


def test_checksums_match_reference_implementations(services: Services) -> None:
    area_id = str(uuid.uuid4())
    store.create_area(services.database, area_id, 10**9)
    data = os.urandom(9 * 1024 * 1024 + 17)  # over the S3 writer's 8 MiB part: multipart
    file, job = stage(services, area_id, "big.bin", data,
                      {"crc32c": f"{crc32c.crc32c(data):08x}"})
    def count(result: str) -> float:
        return REGISTRY.get_sample_value("gateway_area_checksums_total",
                                         {"result": result}) or 0.0
    before = count("checksummed"), count("skipped")
    checksummer = Checksummer(services)
    try:
        checksummer(job)
        checksummer(job)  # redelivered: nothing changes
    finally:
        checksummer.close()
    assert (count("checksummed"), count("skipped")) == (before[0] + 1, before[1] + 1)
    row = store.current_file(services.database, area_id, "big.bin")
    sums = json.loads(row["checksums"])
    assert row["checksum_state"] == "checksummed"
    assert sums["sha256"] == hashlib.sha256(data).hexdigest()
    assert sums["sha1"] == hashlib.sha1(data).hexdigest()  # noqa: S324
    assert sums["crc32c"] == f"{crc32c.crc32c(data):08x}"
    if services.settings.storage_driver == "s3":
        s3 = boto3.client("s3", endpoint_url=services.settings.s3_endpoint_url)
        bucket = services.settings.s3_quarantine
        head = s3.head_object(Bucket=bucket, Key=file.object_key)
        assert head["ETag"].strip('"') == sums["s3_etag"]
        assert sums["s3_etag"].endswith("-2")
        tags = s3.get_object_tagging(Bucket=bucket, Key=file.object_key)["TagSet"]
        assert {t["Key"]: t["Value"] for t in tags} == sums


def test_delete_while_checksumming(services: Services) -> None:
    database = services.database
    area_id = str(uuid.uuid4())
    store.create_area(database, area_id, 10**9)
    jobs = [stage(services, area_id, f"f{i}", os.urandom(200_000))[1] for i in range(2)]
    checksummer = Checksummer(services)
    try:
        checksummer(jobs[0])  # done before the deletion
        store.start_delete(database, area_id)
        checksummer(jobs[1])  # computed while the area is being deleted: not recorded
        assert store.current_file(database, area_id, "f1")["checksum_state"] == "checksumming"
        work = AreaWork(services)
        work({"type": "delete", "area_id": area_id})
        work({"type": "delete", "area_id": area_id})  # redelivered
        checksummer(jobs[1])  # a redelivered checksum job after the deletion
    finally:
        checksummer.close()
    area = store.describe(database, area_id)
    assert area["state"] == "deleted" and area["files"] == []
    storage = services.storage
    assert [k for k in storage.list_keys("quarantine") if area_id in k] == []


def test_a_replaced_version_is_not_recorded(services: Services) -> None:
    database = services.database
    area_id = str(uuid.uuid4())
    store.create_area(database, area_id, 10**9)
    _, old_job = stage(services, area_id, "same", b"first")
    _, new_job = stage(services, area_id, "same", b"second")
    checksummer = Checksummer(services)
    try:
        checksummer(old_job)
        row = store.current_file(database, area_id, "same")
        assert (row["version"], row["checksum_state"]) == (2, "checksumming")
        checksummer(new_job)
    finally:
        checksummer.close()
    row = store.current_file(database, area_id, "same")
    assert json.loads(row["checksums"])["sha256"] == hashlib.sha256(b"second").hexdigest()


def test_a_batch_is_checksummed_files_at_once(services: Services) -> None:
    """The loop hands the jobs fetched at once to ``handle_batch``: every file's checksums
    are recorded; a malformed job among them is raised once the others are done (the loop
    then takes them one by one, and those done are skipped)."""
    database = services.database
    area_id = str(uuid.uuid4())
    store.create_area(database, area_id, 10**9)
    data = {f"f{i}": os.urandom(300_000 + i) for i in range(3)}
    jobs = [stage(services, area_id, name, body)[1] for name, body in data.items()]
    checksummer = Checksummer(services)
    assert checksummer.batch_max >= 2
    try:
        with pytest.raises(MalformedMessage):
            checksummer.handle_batch([*jobs[:2], {"type": "checksum"}, jobs[2]])
    finally:
        checksummer.close()
    for name, body in data.items():
        row = store.current_file(database, area_id, name)
        assert row["checksum_state"] == "checksummed"
        assert json.loads(row["checksums"])["sha256"] == hashlib.sha256(body).hexdigest()


def test_abandoned_direct_uploads_are_aborted(services: Services) -> None:
    database = services.database
    direct = direct_uploads(services.storage)
    area_id = str(uuid.uuid4())
    store.create_area(database, area_id, 10**9)
    recorded_key, orphan_key = object_key(area_id), object_key(area_id)
    recorded = direct.start_direct("quarantine", recorded_key)
    upload_id = store.add_upload(database, area_id, "big", recorded_key, 10, 5 * 2**20, {},
                                 recorded)
    orphan = direct.start_direct("quarantine", orphan_key)  # its gateway died before the row
    sweeper = UploadSweeper(services)
    assert sweeper.sweep() == 0  # young: their clients may still be sending parts
    later = time.time() + services.settings.url_expiry + UploadSweeper.GRACE + 60
    assert sweeper.sweep(now=later) == 2
    assert store.get_upload(database, area_id, upload_id) is None
    for key, state in ((recorded_key, recorded), (orphan_key, orphan)):
        with pytest.raises(FileNotFoundError):
            direct.direct_parts("quarantine", key, state)
    assert sweeper.sweep(now=later) == 0


def test_a_validation_whose_worker_died_runs_again(tmp_path: Path) -> None:
    """A validation claimed by a worker that then died (no heartbeat) is scheduled again
    by the sweeper, with a new job, and runs once; a redelivered job runs nothing."""
    settings = Settings.from_env({"WORKDIR": str(tmp_path), "URL_SIGNING_KEY": "k",
                                  "VALID_UPLOAD_TYPES": "advisor,pairs",
                                  "VALIDATOR_COMMAND_PAIRS": "true"})
    services = Services.build(settings)
    checksummer = Checksummer(services)
    try:
        database = services.database
        area_id = str(uuid.uuid4())
        store.create_area(database, area_id, 10**9)
        for name in ("R1", "R2"):
            checksummer(stage(services, area_id, name, name.encode())[1])
        validation_id = sets.start_validation(database, area_id, "pairs", ["R1", "R2"])
        assert sets.claim_validation(database, validation_id)  # then its worker died
        assert not sets.claim_validation(database, validation_id)
        sweeper = UploadSweeper(services)
        assert sweeper.sweep_validations() == []  # its heartbeat is recent
        later = time.time() + STALLED + 60
        assert sweeper.sweep_validations(now=later) == [validation_id]
        assert sweeper.sweep_validations(now=time.time()) == []
        assert sets.get_validation(database, validation_id)["state"] == "scheduled"
        with database.engine.connect() as conn:
            jobs = [json.loads(v) for v in conn.execute(
                select(outbox.c.value).where(outbox.c.topic == WORK_TOPIC)).scalars()]
        assert [j["validation_id"] for j in jobs] == [validation_id] * 2  # first + requeued
        SetValidator(services)(area_id, validation_id)
        SetValidator(services)(area_id, validation_id)  # redelivered: runs nothing
        row = sets.get_validation(database, validation_id)
        assert (row["state"], row["exit_code"]) == ("valid", 0)
        assert {f["name"]: f["validation_state"] for f in store.describe(database, area_id)[
            "files"]} == {"R1": "valid", "R2": "valid"}
    finally:
        checksummer.close()
        services.close()


def test_a_direct_upload_is_recorded_once(services: Services) -> None:
    """Two completions of one direct upload at once (a client retrying): the second
    records nothing (before: a second version of the same object, whose 'replaced'
    object, the very same one, the handler then deleted)."""
    database, direct = services.database, direct_uploads(services.storage)
    area_id = str(uuid.uuid4())
    store.create_area(database, area_id, 10**9)
    key = object_key(area_id)
    state = direct.start_direct("quarantine", key)
    upload_id = store.add_upload(database, area_id, "f", key, 3, 5 * 2**20, {}, state)
    parts = gateway_parts(services.storage)
    if parts is not None:  # localdisk: the gateway writes the part
        writer = parts.open_direct_part("quarantine", state["upload_id"], 1)
        writer.write(b"abc")
        writer.commit()
        etag = writer.etag
    else:  # S3: straight to its presigned URL
        url = direct.direct_part_url("quarantine", key, state, 1, 5 * 2**20, 600)
        etag = requests.put(url, data=b"abc", timeout=30).headers["ETag"]
    direct.complete_direct("quarantine", key, state, [(1, etag)])
    store.set_lock(database, area_id, True)  # locked meanwhile: refused, the upload kept
    with pytest.raises(store.AreaError):
        store.record_file(database, area_id, "f", key, 3, 5 * 2**20, {}, upload_id)
    assert store.get_upload(database, area_id, upload_id) is not None
    store.set_lock(database, area_id, False)
    file, replaced = store.record_file(database, area_id, "f", key, 3, 5 * 2**20, {},
                                       upload_id)
    assert (file.version, replaced) == (1, None)
    with pytest.raises(store.AreaError) as refused:
        store.record_file(database, area_id, "f", key, 3, 5 * 2**20, {}, upload_id)
    assert refused.value.code == "no_such_upload"
    assert store.current_file(database, area_id, "f")["version"] == 1
    assert services.storage.size("quarantine", key) == 3
