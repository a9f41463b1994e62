"""tus-js-client (npm, pinned in tests/tus/js/package-lock.json, installed by
scripts/test.sh) under Node against a real gateway: parallel uploads (three partial
uploads concatenated by a final one) and data sent with the creation request."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e import Gateway
from tests.helpers import identity
from tests.tus.stored import stored_bytes, wait_available

JS = Path(__file__).resolve().parent / "js"


def node_upload(gateway: Gateway, path: Path, mode: str,
                filetype: str = "application/vnd.redhat.testareno.tusjs+tgz") -> dict[str, str]:
    if shutil.which("node") is None:
        pytest.fail("node is missing: scripts/test.sh installs it (apt-get install nodejs npm)")
    if not (JS / "node_modules" / "tus-js-client").is_dir():
        pytest.fail("tus-js-client is missing: cd tests/tus/js && npm ci (scripts/test.sh does)")
    done = subprocess.run(
        ["node", str(JS / "upload.mjs"), gateway.base + "/api/v1/tus/", str(path), mode,
         identity(), filetype], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode,size", [("parallel", 9_000_001), ("creation", 1_500_000),
                                       ("creation", 10_000_000)])
def test_tus_js_client(gateway: Gateway, tmp_path: Path, mode: str, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "mesh.tgz"
    path.write_bytes(data)
    result = node_upload(gateway, path, mode)
    assert result["requestId"], result
    status = wait_available(gateway, result["requestId"])
    assert status["size"] == size
    assert status["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored_bytes(Path(gateway.env["WORKDIR"]), result["requestId"]) == data
    log = gateway.log.read_text()
    upload_id = result["url"].rsplit("/", 1)[-1]
    if mode == "parallel":
        assert log.count("created (partial,") >= 3
        assert f"tus upload {upload_id} created (final" in log
    else:  # the first chunk (4 MiB) came with the POST, the rest in PATCHes
        assert f"tus upload {upload_id} created (single" in log
        chunks = -(-size // (4 * 1024 * 1024))
        assert log.count(f"204 PATCH /api/v1/tus/{upload_id}") == chunks - 1
