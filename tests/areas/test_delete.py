"""Delete while checksumming, across processes on embedded defaults: a gateway without
checksum workers records files (their checksum jobs wait on the bus), the area is deleted
(202), then a checksummer process starts: it handles every waiting job (the checksums
are skipped, never recorded: the area is going or gone), removes the area's objects and
marks it deleted."""
from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

import pytest

from tests.areas.harness import Areas
from tests.e2e import Gateway
from tests.helpers import wait_for


def skipped(worker: Gateway) -> float:
    with urllib.request.urlopen(f"{worker.base}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r'^gateway_area_checksums_total\{result="skipped"\} ([0-9.e+]+)$', text,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.timeout(600)
def test_delete_while_checksums_are_pending(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "URL_SIGNING_KEY": "t"}
    gateway = Gateway(env, ["gateway"]).start()
    worker = None
    try:
        areas = Areas(gateway)
        area_id = areas.create()
        for i in range(3):
            assert areas.put(area_id, f"f{i}", os.urandom(2_000_000))[0] == 201
        assert areas.get(area_id)["counts"]["checksumming"] == 3
        status, answer = areas.call("DELETE", areas.url(area_id))
        assert (status, answer["state"]) == (202, "deleting")
        worker = Gateway(env, ["checksummer"]).start()
        area = areas.wait(area_id, lambda a: a["state"] == "deleted")
        assert area["files"] == [] and area["counts"]["checksummed"] == 0
        assert wait_for(lambda: skipped(worker) == 3, 120), skipped(worker)
        objects = tmp_path / "work" / "upload-quarantine" / "areas" / area_id
        assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))
    finally:
        if worker is not None:
            assert worker.stop() == 0
        assert gateway.stop() == 0
