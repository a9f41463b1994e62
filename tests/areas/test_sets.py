"""Validation as a set and submission, end to end on a real ``python app.py`` (embedded
defaults; and Kafka mock cluster + S3 on moto + PostgreSQL): a multi-file command
validator gets every file's path in order; results (exit code, output tails, duration,
state) are readable and announced on platform.upload.area-events; an edited file needs
validating again; submit refuses (409, naming them) while files are not valid, then
promotes every file to perm through the verdict path and announces each on
platform.upload.available with the area id."""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from areas.jobs import AREA_EVENTS, TOPICS
from bus import get_bus
from bus.topics import AVAILABLE, all_topics
from core.settings import Settings
from tests.areas.harness import Areas, by_name, real_env, sums
from tests.e2e import Gateway, messages_for

VALIDATOR = '''
import os, sys
paths = sys.argv[1:]
print("files:", " ".join(os.path.relpath(p, "files") for p in paths))
for path in paths:
    with open(path, "rb") as handle:
        if handle.read(3) == b"BAD":
            print(os.path.basename(path) + ": bad record", file=sys.stderr)
            sys.exit(3)
if len(paths) % 2:
    print("unpaired files", file=sys.stderr)
    sys.exit(4)
'''


def validator_env(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "pairs.py"
    script.write_text(VALIDATOR)
    return {"VALID_UPLOAD_TYPES": "advisor,testareno,assets,pairs",
            "VALIDATOR_COMMAND_PAIRS": f"{sys.executable} {script}"}


def validate(areas: Areas, area_id: str, *names: str, expect: int = 202) -> dict[str, Any]:
    status, answer = areas.call("PUT", areas.url(area_id, "validate"),
                                json={"validator": "pairs", "files": list(names)})
    assert status == expect, answer
    return answer


def finished(areas: Areas, area_id: str, validation_id: str) -> dict[str, Any]:
    area = areas.wait(area_id, lambda a: any(
        v["validation_id"] == validation_id and v["state"] not in ("scheduled", "validating")
        for v in a["validations"]))
    return next(v for v in area["validations"] if v["validation_id"] == validation_id)


def whole_flow(areas: Areas, settings: Settings) -> str:
    area_id = areas.create()
    good = {f"run/R{i}.fastq": b"@read\n" + os.urandom(50_000) for i in (1, 2)}
    for name, data in good.items():
        assert areas.put(area_id, name, data, sha256=sums(data)["sha256"])[0] == 201
    assert areas.put(area_id, "run/R3.fastq", b"BAD" + os.urandom(1000))[0] == 201
    assert areas.put(area_id, "run/R4.fastq", b"@r4", sha256="1" * 64)[0] == 201
    areas.wait_checksummed(area_id)
    assert validate(areas, area_id, "run/R4.fastq", expect=409)["error"] == "not_checksummed"
    assert validate(areas, area_id, "nope", expect=404)["error"] == "not_found"
    status, answer = areas.call("PUT", areas.url(area_id, "validate"),
                                json={"validator": "nobody", "files": ["run/R1.fastq"]})
    assert (status, answer["error"]) == (400, "unknown_validator")

    pair = validate(areas, area_id, "run/R2.fastq", "run/R1.fastq")
    bad = validate(areas, area_id, "run/R3.fastq")
    result = finished(areas, area_id, pair["validation_id"])
    assert result["state"] == "valid" and result["exit_code"] == 0, result
    assert result["stdout_tail"].strip() == "files: run/R2.fastq run/R1.fastq"
    assert result["duration_seconds"] is not None
    result = finished(areas, area_id, bad["validation_id"])
    assert result["state"] == "invalid" and result["exit_code"] == 3
    assert result["stderr_tail"].strip() == "R3.fastq: bad record" == result["reason"]

    status, answer = areas.call("POST", areas.url(area_id, "submit"))
    assert (status, answer["error"]) == (409, "not_validated")
    assert "run/R3.fastq" in answer["message"] and "run/R4.fastq" in answer["message"]

    # fixed files, and an edited one that needs validating again
    assert areas.put(area_id, "run/R3.fastq", b"@r3")[0] == 201
    assert areas.put(area_id, "run/R4.fastq", b"@r4")[0] == 201
    edited = b"@read\nedited"
    assert areas.put(area_id, "run/R1.fastq", edited)[0] == 201
    area = areas.wait_checksummed(area_id)
    assert by_name(area)["run/R1.fastq"]["validation_state"] == "unvalidated"
    assert by_name(area)["run/R2.fastq"]["validation_state"] == "valid"
    status, answer = areas.call("POST", areas.url(area_id, "submit"))
    assert status == 409 and "run/R1.fastq" in answer["message"], answer
    for names in (("run/R1.fastq", "run/R2.fastq"), ("run/R3.fastq", "run/R4.fastq")):
        assert finished(areas, area_id, validate(areas, area_id, *names)["validation_id"])[
            "state"] == "valid"
    area = areas.get(area_id)
    assert area["counts"]["valid"] == 4 and area["counts"]["checksummed"] == 4

    status, submitted = areas.call("POST", areas.url(area_id, "submit"))
    assert status == 202, submitted
    request_ids = submitted["request_ids"]
    assert areas.call("POST", areas.url(area_id, "submit")) == (200, submitted)
    assert areas.put(area_id, "late", b"x")[1]["error"] == "area_submitted"
    bus = get_bus(settings)
    consumer = bus.consumer(f"test-{uuid.uuid4().hex}", [AVAILABLE, AREA_EVENTS])
    try:
        seen = list(messages_for(consumer, set(request_ids.values()), 180))
        assert {m["metadata"]["area_file"] for m in seen} == set(request_ids)
        assert all(m["metadata"]["area_id"] == area_id for m in seen)
        r1 = next(m for m in seen if m["metadata"]["area_file"] == "run/R1.fastq")
        assert r1["checksums"]["sha256"] == sums(edited)["sha256"] and r1["size"] == len(edited)
    finally:
        consumer.close()
        bus.close()
    deadline = time.monotonic() + 120
    while True:
        statuses = {r: areas.call("GET", f"{areas.gateway.base}/api/v1/uploads/{r}")[1]["status"]
                    for r in request_ids.values()}
        if set(statuses.values()) == {"available"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(statuses.values()) == {"available"}, statuses
    status, counts = areas.call("GET", areas.url(area_id, "status"))
    assert status == 200 and counts == {"area_id": area_id, "state": "submitted",
                                        "counts": areas.get(area_id)["counts"]}
    return area_id


def area_events(settings: Settings, area_id: str) -> list[dict[str, Any]]:
    bus = get_bus(settings)
    consumer = bus.consumer(f"test-{uuid.uuid4().hex}", [AREA_EVENTS])
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(e["event"] == "submitted"
                                                      for e in events):
            message = consumer.poll(0.2)
            if message is not None:
                value = json.loads(message.value)
                if value["area_id"] == area_id:
                    events.append(value)
    finally:
        consumer.close()
        bus.close()
    return events


@pytest.mark.timeout(600)
def test_validate_and_submit_embedded(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "URL_SIGNING_KEY": "t", **validator_env(tmp_path)}
    gateway = Gateway(env).start()
    try:
        settings = Settings.from_env(gateway.env)
        area_id = whole_flow(Areas(gateway), settings)
        events = area_events(settings, area_id)
    finally:
        assert gateway.stop() == 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "created" and kinds[-1] == "submitted", kinds
    assert {"file_stored", "checksummed", "checksum_mismatch", "validating", "validated",
            "validation_failed"} <= set(kinds)
    assert events[0]["counts"]["files"] == 0
    assert events[-1]["counts"]["valid"] == events[-1]["counts"]["files"] == 4
    failed = next(e for e in events if e["event"] == "validation_failed")
    assert failed["validation"]["exit_code"] == 3 and failed["validation"]["files"] == [
        "run/R3.fastq"]
    stored = [e for e in events if e["event"] == "file_stored"]
    assert stored[0]["file"] and stored[0]["version"] == 1


@pytest.mark.timeout(600)  # a loaded machine: an e2e run of several minutes
@pytest.mark.kafka
@pytest.mark.s3
@pytest.mark.postgres
def test_validate_and_submit_on_kafka_s3_postgres(tmp_path: Path, kafka_bootstrap: str,
                                                  kafka_topics: Any, moto_server: str,
                                                  pg_url: str) -> None:
    env = {**real_env(str(tmp_path / "work"), kafka_bootstrap, moto_server, pg_url),
           **validator_env(tmp_path)}
    kafka_topics(all_topics(Settings.from_env(env)) + list(TOPICS))
    gateway = Gateway(env).start()
    try:
        whole_flow(Areas(gateway), Settings.from_env(gateway.env))
    finally:
        assert gateway.stop() == 0


@pytest.mark.timeout(600)
def test_submit_rejecting_the_invalid_files(tmp_path: Path) -> None:
    """With reject_invalid, a file whose checksums differ from those declared and one
    whose validation failed are rejected through the verdict path (reject bucket, status
    rejected with the reason), the valid ones promoted; undecided files still wait."""
    work = tmp_path / "work"
    gateway = Gateway({"WORKDIR": str(work), "URL_SIGNING_KEY": "t",
                       **validator_env(tmp_path)}).start()
    try:
        areas = Areas(gateway)
        area_id = areas.create()
        for name in ("R1", "R2"):
            assert areas.put(area_id, name, b"@" + name.encode())[0] == 201
        assert areas.put(area_id, "bad", b"BAD record")[0] == 201
        assert areas.put(area_id, "mismatch", b"@m", sha256="2" * 64)[0] == 201
        areas.wait_checksummed(area_id)
        bad = validate(areas, area_id, "bad")
        status, answer = areas.call("POST", areas.url(area_id, "submit"),
                                    json={"reject_invalid": True})
        assert status == 409 and "R1" in answer["message"], answer  # R1, R2 undecided
        assert finished(areas, area_id, validate(areas, area_id, "R1", "R2")["validation_id"])[
            "state"] == "valid"
        assert finished(areas, area_id, bad["validation_id"])["state"] == "invalid"
        assert areas.call("POST", areas.url(area_id, "submit"))[0] == 409
        assert areas.call("POST", areas.url(area_id, "submit"),
                          json={"reject_invalid": "yes"})[0] == 400
        status, answer = areas.call("POST", areas.url(area_id, "submit"),
                                    json={"reject_invalid": True})
        assert status == 202, answer
        assert answer["rejected"] == {
            "bad": "invalid: bad: bad record",
            "mismatch": "checksum_mismatch: the checksums differ from those declared"}
        ids = answer["request_ids"]

        def statuses() -> dict[str, Any]:
            return {name: areas.call("GET", f"{gateway.base}/api/v1/uploads/{rid}")[1]
                    for name, rid in ids.items()}
        deadline = time.monotonic() + 120
        while {s["status"] for s in statuses().values()} != {"available", "rejected"}:
            assert time.monotonic() < deadline, statuses()
            time.sleep(0.1)
        final = statuses()
        assert {n: s["status"] for n, s in final.items()} == {
            "R1": "available", "R2": "available", "bad": "rejected", "mismatch": "rejected"}
        assert final["bad"]["reason"] == "invalid: bad: bad record"
        rejected = sorted(p.name for p in (work / "upload-reject" / "areas" / area_id).iterdir())
        assert len(rejected) == 2
    finally:
        assert gateway.stop() == 0
