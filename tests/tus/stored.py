"""Reading back what a gateway stored (localdisk WORKDIR, SQLite)."""
from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e import Gateway
from tests.helpers import identity, wait_for

DEFAULT = identity()
BUCKET_DIRS = {"quarantine": "upload-quarantine", "perm": "upload-perm", "reject": "upload-reject"}


def upload_row(workdir: Path, request_id: str) -> dict[str, Any]:
    with sqlite3.connect(workdir / "gateway.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM uploads WHERE request_id = ?", (request_id,)).fetchone()
    assert row is not None, request_id
    return dict(row)


def stored_bytes(workdir: Path, request_id: str, timeout: float = 10) -> bytes:
    """The stored bytes, wherever they are: a verdict may move the object between reading
    its row and reading the file, so a missing file means read the row again."""
    deadline = time.monotonic() + timeout
    while True:
        row = upload_row(workdir, request_id)
        try:
            return (workdir / BUCKET_DIRS[row["bucket"]] / row["object_key"]).read_bytes()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def status(gateway: Gateway, request_id: str, ident: str | None = DEFAULT) -> dict[str, Any]:
    """The status API's answer, asked with the identity the upload was made with (the
    tests' default one; None for an upload made without)."""
    headers = {"x-rh-identity": ident} if ident is not None else {}
    request = urllib.request.Request(f"{gateway.base}/api/v1/uploads/{request_id}",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def wait_available(gateway: Gateway, request_id: str, timeout: float = 60,
                   ident: str | None = DEFAULT) -> dict[str, Any]:
    found = wait_for(lambda: (s := status(gateway, request_id, ident))["status"] in (
        "available", "rejected") and s, timeout)
    assert found, status(gateway, request_id, ident)
    status_ = found
    assert status_["status"] == "available", status_
    return status_  # type: ignore[no-any-return]
