"""The bundle itself, its versions, its failures and its claims; on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import threading
import uuid
import zipfile
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, update

from consumer import plans
from consumer.bundler import Bundler
from consumer.records import treatment_plan_assets
from tests.consumer.lab import AssetFile, Lab, obj_mesh


def ready_plan(lab: Lab, names: list[str], compress: bool = True) -> tuple[str, list[AssetFile]]:
    plan_uuid = str(uuid.uuid4())
    assets = [lab.file(name, obj_mesh(n) * (n + 1), compress=compress) for n, name in enumerate(names)]
    for asset in assets:
        lab.event("created", asset)
        lab.event("uploaded", asset)
        lab.available(asset)
    lab.associate(plan_uuid, assets)
    return plan_uuid, assets


def stored_bundle(lab: Lab, plan_uuid: str, version: int = 1) -> bytes:
    with lab.storage.open_reader("perm", f"treatment-plans/{plan_uuid}/PROVPREV-v{version}.zip") as r:
        return r.read()


def test_bundle_is_a_stored_zip_of_the_plain_objs_in_name_order(lab: Lab) -> None:
    plan_uuid, assets = ready_plan(lab, ["X1_Step10.obj", "X1_Step2.obj", "lab/X1_Step1.obj"])
    assert lab.bundler.run_pending() == 1
    data = stored_bundle(lab, plan_uuid)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["X1_Step1.obj", "X1_Step10.obj", "X1_Step2.obj"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
        for asset in assets:
            assert archive.read(asset.file_name.split("/")[-1]) == asset.data
    [asset_doc] = lab.plan(plan_uuid)["assets"]
    assert asset_doc["sha256"] == hashlib.sha256(data).hexdigest() and asset_doc["size"] == len(data)
    assert (asset_doc["kind"], asset_doc["version"], asset_doc["file_count"]) == ("PROVPREV", 1, 3)
    [complete] = lab.completions(plan_uuid)
    assert complete["type"] == "sdc_asset_transfer_uploads_complete"
    assert complete["request_id"] == asset_doc["request_id"]
    [announcement] = lab.announcements(plan_uuid)
    assert announcement["request_id"] == complete["request_id"] and announcement["size"] == len(data)
    assert announcement["checksums"] == {"sha256": asset_doc["sha256"]}
    assert "signature=" in announcement["url"] and announcement["mime"] == "application/zip"
    assert announcement["metadata"]["files"] == ["X1_Step1.obj", "X1_Step10.obj", "X1_Step2.obj"]
    # downloaded under the bundle's own name, not PROVPREV-v1.zip (issue 13 item 5)
    named = f"{plan_uuid}_PROVPREV_v1.zip"
    assert announcement["filename"] == named
    for url in (announcement["url"], asset_doc["url"]):
        assert parse_qs(urlsplit(url).query)["filename"] == [named]


def test_same_content_gives_the_same_bytes(lab: Lab) -> None:
    plan_uuid, _ = ready_plan(lab, ["Y1_Step1.obj"], compress=False)
    lab.bundler.run_pending()
    first = stored_bundle(lab, plan_uuid)
    claim = plans.Claim(0, plan_uuid, 9, "r", "again.zip", "me")
    with lab.database.engine.connect() as conn:
        files = plans.plan_files(conn, plan_uuid)
    lab.bundler._build(claim, files)
    with lab.storage.open_reader("perm", "again.zip") as reader:
        assert reader.read() == first


def test_a_plan_changed_after_bundling_gets_a_new_version(lab: Lab) -> None:
    plan_uuid, _ = ready_plan(lab, ["Z1_Step1.obj"])
    lab.bundler.run_pending()
    extra = lab.file("Z1_Step2.obj", obj_mesh(42))
    lab.event("uploaded", extra)
    lab.associate(plan_uuid, [extra])
    lab.bundler.run_pending()
    assert lab.plan(plan_uuid)["status"] == "waiting"
    lab.available(extra)
    lab.bundler.run_pending()
    document = lab.plan(plan_uuid)
    assert [(a["version"], a["file_count"]) for a in document["assets"]] == [(2, 2), (1, 1)]
    assert document["status"] == "bundled" and len(lab.completions(plan_uuid)) == 2
    with zipfile.ZipFile(io.BytesIO(stored_bundle(lab, plan_uuid, 1))) as archive:
        assert archive.namelist() == ["Z1_Step1.obj"]  # version 1 is untouched


def test_missing_or_corrupt_object_fails_the_bundle_for_good(lab: Lab) -> None:
    plan_uuid, assets = ready_plan(lab, ["W1_Step1.obj"])
    upload = lab.database.get_upload(assets[0].request_id)
    assert upload is not None
    writer = lab.storage.open_writer("perm", upload["object_key"])
    writer.write(b"not gzip at all")
    writer.commit()
    assert lab.bundler.run_pending() == 0
    document = lab.plan(plan_uuid)
    assert document["status"] == "failed" and "corrupt gzip" in document["assets"][0]["error"]
    assert lab.completions(plan_uuid) == [] and lab.bundler.run_pending() == 0
    assert not lab.storage.exists("perm", f"treatment-plans/{plan_uuid}/PROVPREV-v1.zip")


def test_rejected_upload_blocks_the_plan(lab: Lab) -> None:
    plan_uuid = str(uuid.uuid4())
    asset = lab.file("V1_Step1.obj", obj_mesh(1))
    lab.event("uploaded", asset)
    lab.associate(plan_uuid, [asset])
    lab.verdict(asset, "failure")
    lab.bundler.run_pending()
    assert lab.plan(plan_uuid)["status"] == "blocked"
    assert lab.plan(plan_uuid)["transfers"][0]["validation"] == "invalid"


@pytest.mark.parametrize("round_", range(3))
def test_racing_bundlers_build_once(lab: Lab, round_: int) -> None:
    plan_uuid, _ = ready_plan(lab, [f"R{round_}_Step1.obj", f"R{round_}_Step2.obj"])
    bundlers = [Bundler(lab.settings, lab.storage, lab.database) for _ in range(4)]
    barrier = threading.Barrier(len(bundlers))
    outcomes: list[str] = []

    def race(bundler: Bundler) -> None:
        barrier.wait()
        outcomes.append(bundler.process(plan_uuid))

    threads = [threading.Thread(target=race, args=(b,)) for b in bundlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("bundled") == 1, outcomes
    assert set(outcomes) <= {"bundled", "busy", "stale", "done"}, outcomes
    while any(b.run_pending() for b in bundlers):
        pass
    assert len(lab.completions(plan_uuid)) == 1 and len(lab.announcements(plan_uuid)) == 1
    assert [a["version"] for a in lab.plan(plan_uuid)["assets"]] == [1]


def test_an_expired_claim_is_taken_over(lab: Lab) -> None:
    plan_uuid, _ = ready_plan(lab, ["E1_Step1.obj"])
    crashed = Bundler(lab.settings, lab.storage, lab.database, owner="crashed")
    with lab.database.engine.connect() as conn:
        revision = plans.plan_revision(conn, plan_uuid)
        key = plans.content_key(plans.plan_files(conn, plan_uuid))
    with lab.database.engine.begin() as conn:
        claim = plans.claim_bundle(conn, plan_uuid, revision or 0, key, crashed.owner, 60)
    assert isinstance(claim, plans.Claim)
    assert lab.bundler.process(plan_uuid) == "busy"
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with lab.database.engine.begin() as conn:
        conn.execute(update(treatment_plan_assets).values(claimed_until=past))
    assert lab.bundler.process(plan_uuid) == "bundled"
    with lab.database.engine.connect() as conn:
        [row] = conn.execute(select(treatment_plan_assets)).all()
    assert (row.version, row.status, row.claimed_by) == (1, "done", lab.bundler.owner)
    with lab.database.engine.begin() as conn:  # the crashed one cannot complete it any more
        assert not plans.complete_claim(conn, claim, "x", 1, [])


def test_concurrent_associations_cannot_put_one_name_twice_in_a_plan(lab: Lab) -> None:
    plan_uuid = str(uuid.uuid4())
    twins = [lab.file("T1_Step1.obj", obj_mesh(n)) for n in (1, 2)]
    for asset in twins:
        lab.event("created", asset)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def associate(asset: AssetFile) -> None:
        barrier.wait()
        try:
            lab.associate(plan_uuid, [asset])
            results.append("ok")
        except plans.AssociationError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=associate, args=(asset,)) for asset in twins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["not_associable", "ok"]
    assert len(lab.plan(plan_uuid)["transfers"]) == 1
