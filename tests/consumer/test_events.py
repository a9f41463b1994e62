"""Asset transfer events in every order, redelivered, and malformed; on SQLite and
PostgreSQL (``database_url``)."""
from __future__ import annotations

import io
import itertools
import json
import uuid
import zipfile
from typing import Callable

import pytest
from sqlalchemy import select

from bus import Message
from consumer.events import ASSET_TRANSFER_TOPIC
from consumer.records import asset_transfers, list_transfers
from core.consumer import MalformedMessage
from tests.consumer.lab import AssetFile, Lab, obj_mesh

STEPS = ("created", "uploaded", "available", "associate")


def run_step(lab: Lab, step: str, asset: AssetFile, plan_uuid: str) -> None:
    if step == "available":
        lab.available(asset)
    elif step == "associate":
        lab.associate(plan_uuid, [asset])
    else:
        lab.event(step, asset)


def bundle_bytes(lab: Lab, plan_uuid: str, version: int = 1) -> bytes:
    key = f"treatment-plans/{plan_uuid}/PROVPREV-v{version}.zip"
    with lab.storage.open_reader("perm", key) as reader:
        return reader.read()


def transfer_rows(lab: Lab) -> list[dict[str, object]]:
    with lab.database.engine.connect() as conn:
        rows = conn.execute(select(asset_transfers).order_by(asset_transfers.c.id))
        return [dict(row) for row in rows.mappings()]


def test_every_order_bundles_exactly_once(lab: Lab) -> None:
    orders = [order for order in itertools.permutations(STEPS)
              # staff can only pick a transfer that one of its events has recorded
              if order.index("associate") > min(order.index("created"), order.index("uploaded"))]
    assert len(orders) == 16
    for number, order in enumerate(orders):
        plan_uuid = str(uuid.uuid4())
        asset = lab.file(f"C{number}_Step1.obj", obj_mesh(number))
        for done, step in enumerate(order, 1):
            run_step(lab, step, asset, plan_uuid)
            lab.bundler.run_pending()
            # the created event names the file, but the uploaded one does too: a bundle
            # waits for the upload, its validation and the association only
            ready = set(order[:done]) >= {"uploaded", "available", "associate"}
            assert len(lab.completions(plan_uuid)) == int(ready), (order, step)
        document = lab.plan(plan_uuid)
        assert document["status"] == "bundled", order
        [transfer] = document["transfers"]
        assert transfer["case_number"] == f"C{number}" and transfer["step"] == 1
        assert transfer["is_created"] and transfer["is_uploaded"] and transfer["validation"] == "valid"
        assert transfer["associated_by"] == "dr.who" and transfer["request_id"] == asset.request_id
        with zipfile.ZipFile(io.BytesIO(bundle_bytes(lab, plan_uuid))) as archive:
            assert archive.namelist() == [asset.file_name]
            assert archive.read(asset.file_name) == asset.data


def test_redelivered_events_change_nothing(lab: Lab) -> None:
    plan_uuid = str(uuid.uuid4())
    first, second = (lab.file(f"C9_Step{n}.obj", obj_mesh(100 + n)) for n in (1, 2))
    steps: list[Callable[[], None]] = [
        lambda: lab.event("uploaded", first), lambda: lab.event("created", second),
        lambda: lab.associate(plan_uuid, [first, second]), lambda: lab.available(first),
        lambda: lab.event("created", first), lambda: lab.event("uploaded", second),
        lambda: lab.available(second),
    ]
    for step in steps:
        step()
        step()  # redelivered at once
        lab.bundler.run_pending()
    assert len(lab.completions(plan_uuid)) == 1 and len(lab.announcements(plan_uuid)) == 1
    rows, archive = transfer_rows(lab), bundle_bytes(lab, plan_uuid)
    for step in steps:  # and everything once more, later
        step()
        lab.bundler.run_pending()
    assert transfer_rows(lab) == rows and bundle_bytes(lab, plan_uuid) == archive
    assert len(lab.completions(plan_uuid)) == 1 and len(lab.announcements(plan_uuid)) == 1
    assert [a["version"] for a in lab.plan(plan_uuid)["assets"]] == [1]


def test_unmatched_name_is_recorded_with_reason(lab: Lab) -> None:
    asset = lab.file("scan of case 7.obj", obj_mesh(7))
    lab.event("created", asset)
    [row] = transfer_rows(lab)
    assert row["case_number"] is None and row["type"] == "obj"
    assert "does not match" in str(row["unmatched_reason"])


def test_uploaded_first_then_created_completes_the_record(lab: Lab) -> None:
    asset = lab.file("lab1/C5_Step3.obj", obj_mesh(5))
    lab.event("uploaded", asset)
    [row] = transfer_rows(lab)
    assert row["is_uploaded"] and not row["is_created"] and row["request_id"] == asset.request_id
    lab.event("created", asset)
    [row] = transfer_rows(lab)
    assert row["is_uploaded"] and row["is_created"] and (row["case_number"], row["step"]) == ("C5", 3)


def test_a_new_upload_of_rejected_content_replaces_it(lab: Lab) -> None:
    plan_uuid = str(uuid.uuid4())
    asset = lab.file("C6_Step1.obj", obj_mesh(6))
    lab.event("uploaded", asset)
    lab.verdict(asset, "failure")
    with lab.database.engine.connect() as conn:
        [listed] = list_transfers(conn, "C6", [])
    assert (listed["status"], listed["validation"]) == ("invalid", "invalid")
    again = AssetFile(asset.file_name, asset.data, uuid.uuid4().hex)
    lab.store(again)
    lab.event("uploaded", again)
    assert transfer_rows(lab)[0]["request_id"] == again.request_id
    lab.associate(plan_uuid, [again])
    lab.available(again)
    lab.bundler.run_pending()
    assert lab.plan(plan_uuid)["status"] == "bundled"


@pytest.mark.parametrize("value", [
    {"type": "sdc_asset_transfer_file_moved", "file_name": "a.obj", "uncompressed_sha1_hash": "a" * 40},
    {"type": "sdc_asset_transfer_file_created", "uncompressed_sha1_hash": "a" * 40},
    {"type": "sdc_asset_transfer_file_created", "file_name": "a.obj", "uncompressed_sha1_hash": "xyz"},
    {"type": "sdc_asset_transfer_file_created", "file_name": "a.obj",
     "uncompressed_sha1_hash": "a" * 40, "request_id": {"no": 1}},
    # issue 10 item 7: a type that is not a string was retried 5 times (TypeError)
    {"type": ["sdc_asset_transfer_file_created"], "file_name": "a.obj",
     "uncompressed_sha1_hash": "a" * 40},
    {"type": {"kind": "x"}, "file_name": "a.obj", "uncompressed_sha1_hash": "a" * 40},
    {"type": 7, "file_name": "a.obj", "uncompressed_sha1_hash": "a" * 40},
])
def test_malformed_events_are_refused(lab: Lab, value: dict[str, object]) -> None:
    message = Message(ASSET_TRANSFER_TOPIC, None, json.dumps(value).encode(), 0, 1)
    with pytest.raises(MalformedMessage):
        lab.deliver(message)
    assert transfer_rows(lab) == []


def test_own_completion_and_other_services_are_ignored(lab: Lab) -> None:
    lab.deliver(lab.message(ASSET_TRANSFER_TOPIC, {"type": "sdc_asset_transfer_uploads_complete",
                                                    "treatment_plan_uuid": str(uuid.uuid4())}))
    lab.deliver(lab.message("platform.upload.available", {"service": "testareno"}))
    assert transfer_rows(lab) == []
