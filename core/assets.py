"""Asset-transfer events (``platform.asset-transfer``) that every intake emits for a
stored file: ``sdc_asset_transfer_file_created`` and ``_uploaded``, carrying the file's
base name and the sha1 of its uncompressed content (seed: asset-transfer-workflow)."""
from __future__ import annotations

from bus.topics import ASSET_TRANSFER
from db import OutboxItem


def asset_event(kind: str, name: str, sha1: str, request_id: str) -> OutboxItem:
    """``sdc_asset_transfer_file_<kind>`` (created, uploaded) for the file ``name``."""
    value = {"type": f"sdc_asset_transfer_file_{kind}", "file_name": name.rsplit("/", 1)[-1],
             "uncompressed_sha1_hash": sha1, "request_id": request_id}
    return OutboxItem(ASSET_TRANSFER, request_id, value)


def asset_events(name: str, sha1: str, request_id: str) -> list[OutboxItem]:
    """Created, then uploaded: both recorded with the upload, in that order."""
    return [asset_event(kind, name, sha1, request_id) for kind in ("created", "uploaded")]
