"""The area API on a real ``python app.py`` on embedded defaults: create (idempotent),
describe, files through the gateway with names refused and a per-area limit, checksums
after the fact (a declared one wrong), lock/unlock, the same file re-uploaded, delete."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.areas.harness import Areas, by_name, sums
from tests.e2e import Gateway


@pytest.fixture(scope="module")
def areas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Areas]:
    work = tmp_path_factory.mktemp("areas") / "work"
    gateway = Gateway({"WORKDIR": str(work), "URL_SIGNING_KEY": "test"}).start()
    yield Areas(gateway)
    assert gateway.stop() == 0


def area_objects(areas: Areas, area_id: str) -> list[str]:
    root = Path(areas.gateway.env["WORKDIR"]) / "upload-quarantine" / "areas" / area_id
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_create_is_idempotent_and_refuses_nonsense(areas: Areas) -> None:
    area_id = str(uuid.uuid4())
    status, created = areas.call("POST", areas.url(area_id))
    assert status == 201 and created["state"] == "open" and created["files"] == []
    assert created["max_file_size"] == 104857600  # MAX_LENGTH
    status, again = areas.call("POST", areas.url(area_id.upper()))
    assert (status, again["area_id"]) == (200, area_id)
    for body in ({"max_file_size": 0}, {"max_file_size": "1"}, {"surprise": 1}):
        assert areas.call("POST", areas.url(str(uuid.uuid4())), json=body)[0] == 400
    assert areas.call("POST", areas.url("not-a-uuid"))[0] == 404
    assert areas.call("GET", areas.url(str(uuid.uuid4())))[1]["error"] == "not_found"
    assert areas.call("PUT", areas.file_url(str(uuid.uuid4()), "a"), data=b"x")[0] == 404


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../b", "/abs", "a\x01b", "tab\there",
                                  "a//b", "./a", "del\x7f"])
def test_names_refused(areas: Areas, name: str) -> None:
    area_id = areas.create()
    status, answer = areas.put(area_id, name, b"x")
    assert (status, answer["error"]) == (400, "bad_name"), answer
    assert areas.get(area_id)["files"] == [] and area_objects(areas, area_id) == []


def test_per_area_size_limit(areas: Areas) -> None:
    area_id = areas.create(max_file_size=1000)
    assert areas.put(area_id, "ok", b"x" * 1000)[0] == 201
    status, answer = areas.put(area_id, "big", b"x" * 1001)
    assert (status, answer["error"]) == (413, "upload_too_large")
    # no Content-Length (chunked): refused while streaming, nothing kept
    chunks = iter([b"x" * 600, b"x" * 600])
    status, _ = areas.call("PUT", areas.file_url(area_id, "chunked"), data=chunks)
    assert status == 413
    assert [f["name"] for f in areas.get(area_id)["files"]] == ["ok"]


def test_files_checksummed_one_declared_wrong(areas: Areas) -> None:
    area_id = areas.create()
    files = {f"run1/R{i}.fastq": os.urandom(3_000_000 + i) for i in range(3)}
    wrong = "run1/R2.fastq"
    for name, data in files.items():
        declared = sums(data)
        if name == wrong:
            declared["sha256"] = "0" * 64
        status, answer = areas.put(area_id, name, data, sha256=declared["sha256"],
                                   crc32c=declared["crc32c"])
        assert status == 201 and answer["checksum_state"] == "checksumming", answer
    area = areas.wait_checksummed(area_id)
    found = by_name(area)
    for name, data in files.items():
        expected = sums(data)
        checksums = found[name]["checksums"]
        assert {k: checksums[k] for k in expected} == expected
        assert checksums["s3_etag"] == __import__("hashlib").md5(data).hexdigest()
        assert found[name]["checksum_state"] == ("checksum_mismatch" if name == wrong
                                                 else "checksummed")
    assert area["counts"]["checksummed"] == 2 and area["counts"]["checksum_mismatch"] == 1
    assert areas.put(area_id, "x", b"1", crc32c="zz")[0] == 400


def test_lock_unlock_and_reupload(areas: Areas) -> None:
    area_id = areas.create()
    assert areas.put(area_id, "a.txt", b"one")[0] == 201
    status, answer = areas.call("POST", areas.url(area_id, "lock"))
    assert (status, answer["state"]) == (200, "locked")
    assert areas.call("POST", areas.url(area_id, "lock"))[1]["state"] == "locked"
    status, answer = areas.put(area_id, "b.txt", b"two")
    assert (status, answer["error"]) == (409, "area_locked")
    assert areas.call("POST", areas.url(area_id, "unlock"))[1]["state"] == "open"
    areas.wait_checksummed(area_id)
    status, answer = areas.put(area_id, "a.txt", b"one, edited")
    assert status == 201 and answer["version"] == 2
    area = areas.wait_checksummed(area_id)
    assert by_name(area)["a.txt"]["checksums"]["sha256"] == sums(b"one, edited")["sha256"]
    assert len(area_objects(areas, area_id)) == 1  # the first version's object is gone


def test_delete_is_asynchronous_and_removes_everything(areas: Areas) -> None:
    area_id = areas.create()
    for i in range(3):
        assert areas.put(area_id, f"f{i}", os.urandom(100_000))[0] == 201
    status, answer = areas.call("DELETE", areas.url(area_id))
    assert status == 202 and answer["state"] in ("deleting", "deleted")
    area = areas.wait(area_id, lambda a: a["state"] == "deleted")
    assert area["files"] == [] and area_objects(areas, area_id) == []
    status, answer = areas.put(area_id, "late", b"x")
    assert (status, answer["error"]) == (409, "area_deleting")
    assert areas.call("DELETE", areas.url(area_id))[0] == 202  # idempotent


def test_every_endpoint_needs_a_key_with_the_areas_scope(areas: Areas) -> None:
    """Issue 17 item 1: no key gets 401, a key without the scope 403; the signed part
    URLs of a direct upload are their own credential (tests/areas/test_direct.py)."""
    area_id = areas.create()
    name = "f.txt"
    calls = [("POST", areas.url(str(uuid.uuid4()))), ("GET", areas.url(area_id)),
             ("DELETE", areas.url(area_id)), ("POST", areas.url(area_id, "lock")),
             ("POST", areas.url(area_id, "unlock")), ("GET", areas.url(area_id, "status")),
             ("PUT", areas.file_url(area_id, name)), ("GET", areas.file_url(area_id, name)),
             ("POST", areas.file_url(area_id, name, "uploads")),
             ("POST", areas.file_url(area_id, name, "uploads", "0" * 32, "complete")),
             ("DELETE", areas.file_url(area_id, name, "uploads", "0" * 32)),
             ("PUT", areas.url(area_id, "validate")), ("POST", areas.url(area_id, "submit"))]
    anonymous = Areas(areas.gateway, {})
    others = Areas(areas.gateway, areas.gateway.api_key("pulls", "staff", "admin"))
    for method, url in calls:
        status, answer = anonymous.call(method, url, data=b"x" * 100)
        assert (status, answer["error"]) == (401, "unauthorized"), (method, url)
        status, answer = others.call(method, url, data=b"x" * 100)
        assert (status, answer["error"]) == (403, "forbidden"), (method, url)
    area = areas.get(area_id)
    assert area["state"] == "open" and area["files"] == []
    assert anonymous.call("GET", areas.url(area_id, "status"),
                          headers={"Authorization": "Bearer nonsense"})[0] == 401
