"""Rejected lab files are visible on the share (issue 13 item 4): when the verdict comes
back, the file moves from Processed/ to Rejected/ beside <name>.rejected.json with the
reason; an accepted one stays in Processed/."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from core.verdicts import VerdictHandler
from tests.helpers import wait_for
from tests.watcher.harness import Harness, watch_env
from watcher.rejections import Rejections

MESH = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


def test_rejected_files_move_to_rejected_with_the_reason(tmp_path: Path) -> None:
    env = watch_env(tmp_path)
    with Harness(env) as h:
        assert h.services is not None
        (h.root / "lab1").mkdir()
        (h.root / "lab1" / "C1_Step1.obj").write_bytes(MESH)
        (h.root / "lab1" / "C2_Step1.obj").write_bytes(MESH + b"f 9 9 9\n")
        (h.root / "C3_Step1.obj.gz").write_bytes(gzip.compress(MESH + b"# 3\n"))
        assert wait_for(lambda: len(h.files(h.processed)) == 3, 20)
        ids = {row["filename"]: row["request_id"] for row in h.uploads()}
        verdicts = VerdictHandler(h.settings, h.services.storage, h.services.database,
                                  h.services.relay.wake)
        verdicts({"request_id": ids["lab1/C1_Step1.obj"], "validation": "success"})
        for name in ("lab1/C2_Step1.obj", "C3_Step1.obj"):
            verdicts({"request_id": ids[name], "validation": "failure",
                      "reason": "face 4 names vertex 9 of 3"})
        rejected = h.root / "Rejected"
        expected = ["C3_Step1.obj.gz", "C3_Step1.obj.gz.rejected.json", "lab1/C2_Step1.obj",
                    "lab1/C2_Step1.obj.rejected.json"]
        assert wait_for(lambda: rejected.is_dir() and h.files(rejected) == expected, 20), \
            h.files(rejected) if rejected.is_dir() else "no Rejected/"
        assert h.files(h.processed) == ["lab1/C1_Step1.obj"]
        report = json.loads((rejected / "lab1" / "C2_Step1.obj.rejected.json").read_text())
        assert report["file"] == "lab1/C2_Step1.obj"
        assert report["request_id"] == ids["lab1/C2_Step1.obj"]
        assert report["reason"] == "face 4 names vertex 9 of 3" and report["rejected_at"]
        # a redelivered status changes nothing
        rejections = Rejections(h.services)
        upload = h.services.database.get_upload(ids["lab1/C2_Step1.obj"])
        assert upload is not None
        assert rejections.mark("lab1/C2_Step1.obj", upload, []) == "already"
        assert h.files(rejected) == expected


def test_a_file_that_cannot_be_told_gets_a_report_only(tmp_path: Path) -> None:
    env = watch_env(tmp_path)
    with Harness(env) as h:
        assert h.services is not None
        (h.root / "C4_Step1.obj").write_bytes(MESH)
        assert wait_for(lambda: len(h.files(h.processed)) == 1, 20)
        [row] = h.uploads()
        (h.processed / "C4_Step1.obj").write_bytes(b"staff replaced it")
        VerdictHandler(h.settings, h.services.storage, h.services.database,
                       h.services.relay.wake)({"request_id": row["request_id"],
                                               "validation": "failure", "reason": "bad"})
        rejected = h.root / "Rejected"
        assert wait_for(lambda: rejected.is_dir() and h.files(rejected), 20)
        assert h.files(rejected) == ["C4_Step1.obj.rejected.json"]
        assert h.files(h.processed) == ["C4_Step1.obj"]
