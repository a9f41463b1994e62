"""The whole asset transfer workflow in one real ``python app.py``: OBJ files dropped in
WATCH_DIR (stored gzip-compressed by the watcher, checked by the OBJ validator), associated
through the API, bundled into plain OBJs."""
from __future__ import annotations

import io
import json
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

from tests.consumer.lab import obj_mesh
from tests.e2e import Gateway, fetch
from tests.helpers import wait_for


def get(gateway: Gateway, path: str) -> Any:
    with urllib.request.urlopen(gateway.base + path, timeout=10) as response:
        return json.loads(response.read())


def post(gateway: Gateway, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(gateway.base + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_dropped_files_are_bundled_after_association(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"), "WATCH_DIR": str(watch),
                       "WATCH_QUIET_SECONDS": "0.2"}).start()
    try:
        case = f"W{uuid.uuid4().hex[:6].upper()}"
        files = {f"{case}_Step{n}.obj": obj_mesh(n) * 50 for n in (1, 2)}
        for name, data in files.items():
            (watch / name).write_bytes(data)
        query = f"/api/v1/asset-transfers?case_number={case}&status=ready"
        ready = wait_for(lambda: len(get(gateway, query)["transfers"]) == 2, 30)
        assert ready, get(gateway, f"/api/v1/asset-transfers?case_number={case}")
        ids = [t["id"] for t in get(gateway, query)["transfers"]]
        plan_uuid = str(uuid.uuid4())
        post(gateway, f"/api/v1/treatment-plans/{plan_uuid}/asset-transfers",
             {"transfer_ids": ids, "user": "lab"})
        plan_path = f"/api/v1/treatment-plans/{plan_uuid}"
        assert wait_for(lambda: get(gateway, plan_path)["status"] == "bundled", 30), get(gateway, plan_path)
        [asset] = get(gateway, plan_path)["assets"]
        with zipfile.ZipFile(io.BytesIO(fetch(asset["url"]))) as archive:
            assert {name: archive.read(name) for name in archive.namelist()} == files
    finally:
        assert gateway.stop() == 0
