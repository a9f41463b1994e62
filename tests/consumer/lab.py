"""Plays the watcher and the gateway for bundler tests: stores asset uploads (gzip, as the
watcher does), applies verdicts with the gateway's own handler, and builds the messages
the bundler consumes."""
from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bus import Message
from consumer import plans
from consumer.bundler import Bundler
from consumer.events import ASSET_TRANSFER_TOPIC, AVAILABLE_TOPIC, TransferEvents
from core.settings import Settings
from core.verdicts import VerdictHandler, available_message
from db import Database, utcnow
from db.schema import outbox
from storage import Storage

EVENT_TYPES = {"created": "sdc_asset_transfer_file_created",
               "uploaded": "sdc_asset_transfer_file_uploaded"}


def obj_mesh(seed: int) -> bytes:
    """A small valid OBJ: one triangle, made distinct by ``seed``."""
    return (f"# mesh {seed}\nv 0 0 0\nv 1 0 {seed}\nv 0 1 0\nf 1 2 3\n").encode()


@dataclass(frozen=True)
class AssetFile:
    file_name: str
    data: bytes
    request_id: str

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data).hexdigest()


class Lab:
    def __init__(self, settings: Settings, storage: Storage, database: Database) -> None:
        self.settings = settings
        self.storage = storage
        self.database = database
        self.events = TransferEvents(settings, database)
        self.bundler = Bundler(settings, storage, database)
        self.verdicts = VerdictHandler(settings, storage, database)
        self.offset = 0

    def file(self, file_name: str, data: bytes, compress: bool = True, store: bool = True,
             org_id: str | None = None) -> AssetFile:
        asset = AssetFile(file_name, data, uuid.uuid4().hex)
        if store:
            self.store(asset, compress, org_id)
        return asset

    def store(self, asset: AssetFile, compress: bool = True, org_id: str | None = None) -> None:
        """What the watcher's ingest does: the object in quarantine, the upload row."""
        key = uuid.uuid4().hex
        writer = self.storage.open_writer("quarantine", key)
        writer.write(gzip.compress(asset.data) if compress else asset.data)
        writer.commit()
        row = {"request_id": asset.request_id, "service": "assets", "category": "obj",
               "content_type": "application/vnd.redhat.assets.obj", "filename": asset.file_name,
               "size": len(asset.data), "sha256": hashlib.sha256(asset.data).hexdigest(),
               "mime": "text/plain", "account": None, "org_id": org_id, "principal": None,
               "b64_identity": None, "metadata": "{}", "source": "watcher",
               "compression": "gzip" if compress else None, "object_key": key,
               "bucket": "quarantine"}
        self.database.record_upload(row, utcnow(), [])

    def message(self, topic: str, value: dict[str, Any], key: str | None = None) -> Message:
        self.offset += 1
        return Message(topic, key, json.dumps(value).encode(), 0, self.offset)

    def event(self, kind: str, asset: AssetFile) -> None:
        value = {"type": EVENT_TYPES[kind], "file_name": asset.file_name,
                 "uncompressed_sha1_hash": asset.sha1, "request_id": asset.request_id}
        self.deliver(self.message(ASSET_TRANSFER_TOPIC, value, asset.request_id))

    def verdict(self, asset: AssetFile, validation: str = "success") -> None:
        self.verdicts({"request_id": asset.request_id, "validation": validation})

    def available(self, asset: AssetFile) -> None:
        """The gateway applies a success verdict, then the bundler gets its announcement."""
        self.verdict(asset)
        upload = self.database.get_upload(asset.request_id)
        assert upload is not None
        url = self.storage.signed_url("perm", upload["object_key"], 60)
        self.deliver(self.message(AVAILABLE_TOPIC, available_message(upload, url, {}),
                                  asset.request_id))

    def deliver(self, message: Message) -> None:
        self.events(json.loads(message.value), message)

    def associate(self, plan_uuid: str, assets: list[AssetFile], user: str = "dr.who") -> None:
        ids = [self.transfer_id(asset) for asset in assets]
        with self.database.engine.begin() as conn:
            plans.associate(conn, plan_uuid, ids, user)

    def transfer_id(self, asset: AssetFile) -> int:
        from consumer.records import asset_transfers as t

        with self.database.engine.connect() as conn:
            return int(conn.execute(select(t.c.id).where(t.c.sha1 == asset.sha1)).scalar_one())

    def plan(self, plan_uuid: str) -> dict[str, Any]:
        with self.database.engine.connect() as conn:
            document = plans.plan_document(
                conn, plan_uuid, lambda key, name: self.storage.signed_url("perm", key, 3600, name))
        assert document is not None
        return document

    def outbox(self, topic: str) -> list[dict[str, Any]]:
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(outbox.c.value).where(outbox.c.topic == topic)
                                .order_by(outbox.c.id))
            return [json.loads(value) for value in rows.scalars()]

    def completions(self, plan_uuid: str) -> list[dict[str, Any]]:
        return [m for m in self.outbox(ASSET_TRANSFER_TOPIC)
                if m.get("treatment_plan_uuid") == plan_uuid]

    def announcements(self, plan_uuid: str) -> list[dict[str, Any]]:
        return [m for m in self.outbox(AVAILABLE_TOPIC)
                if m.get("service") == "treatment-plan" and m["treatment_plan_uuid"] == plan_uuid]
