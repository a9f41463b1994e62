"""Reading back what a gateway stored (localdisk WORKDIR, SQLite)."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.e2e import Gateway
from tests.helpers import wait_for

BUCKET_DIRS = {"quarantine": "upload-quarantine", "perm": "upload-perm", "reject": "upload-reject"}


def upload_row(workdir: Path, request_id: str) -> dict[str, Any]:
    with sqlite3.connect(workdir / "gateway.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM uploads WHERE request_id = ?", (request_id,)).fetchone()
    assert row is not None, request_id
    return dict(row)


def stored_bytes(workdir: Path, request_id: str) -> bytes:
    row = upload_row(workdir, request_id)
    return (workdir / BUCKET_DIRS[row["bucket"]] / row["object_key"]).read_bytes()


def wait_available(gateway: Gateway, request_id: str, timeout: float = 60) -> dict[str, Any]:
    status = wait_for(lambda: (s := gateway.status(request_id))["status"] in (
        "available", "rejected") and s, timeout)
    assert status, gateway.status(request_id)
    assert status["status"] == "available", status
    return status  # type: ignore[no-any-return]
