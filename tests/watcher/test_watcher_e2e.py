"""The watcher in real processes: ``python app.py`` (all roles) with WATCH_DIR, and
``python app.py watcher`` killed with SIGKILL in the middle of a burst."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from sqlalchemy import select

from core.settings import Settings
from db import Database
from db.schema import outbox, uploads
from tests.e2e import ROOT, Gateway, fetch
from tests.helpers import wait_for
from tests.watcher.harness import read_topics, watch_env


def processed(root: Path) -> list[str]:
    folder = root / "Processed"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def rows(settings: Settings) -> list[dict[str, object]]:
    database = Database(settings.database_url)
    try:
        with database.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(uploads)).mappings()]
    finally:
        database.close()


def outbox_keys(settings: Settings) -> set[str]:
    database = Database(settings.database_url)
    try:
        with database.engine.connect() as conn:
            query = select(outbox.c.key).where(outbox.c.topic == "platform.upload.assets")
            return set(conn.execute(query).scalars())
    finally:
        database.close()


def test_all_in_one_with_watch_dir_validates_and_serves_status(tmp_path: Path) -> None:
    env = watch_env(tmp_path)
    root = Path(env["WATCH_DIR"])
    root.mkdir(parents=True)
    gateway = Gateway(env).start()
    try:
        (root / "report.txt").write_text("lab results\n")
        assert wait_for(lambda: processed(root) == ["report.txt"], 20)
        [row] = rows(Settings.from_env(gateway.env))
        status = wait_for(lambda: (s := gateway.status(str(row["request_id"]), None))["status"]
                          == "available" and s, 30)
        assert status, gateway.status(str(row["request_id"]), None)
        assert [e["status"] for e in status["timeline"]][:2] == ["received", "stored"]
        with urllib.request.urlopen(gateway.base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'gateway_watcher_files_total{outcome="ingested"} 1.0' in text
        assert "gateway_watcher_backlog_files 0.0" in text
    finally:
        assert gateway.stop() == 0


def test_sigkill_mid_burst_then_restart_ingests_each_file_once(tmp_path: Path) -> None:
    env = watch_env(tmp_path, WATCH_QUIET_SECONDS="0.2")
    root, count = Path(env["WATCH_DIR"]), 300
    root.mkdir(parents=True)
    settings = Settings.from_env(env)
    stage = tmp_path / "stage"
    stage.mkdir()
    for i in range(count):
        (stage / f"K{i:03d}_Step1.obj").write_bytes(b"v %d 0 0\n" % i * 200)
    watcher = Gateway(env, ["watcher"]).start()
    for path in sorted(stage.iterdir()):
        path.rename(root / path.name)
    assert wait_for(lambda: len(processed(root)) >= 30, 30, interval=0.01)
    assert watcher.stop(signal.SIGKILL) == -signal.SIGKILL
    assert len(processed(root)) < count, "the burst finished before the kill: nothing tested"
    watcher = Gateway({**env, "LISTEN_PORT": str(watcher.port)}, ["watcher"]).start()
    try:
        assert wait_for(lambda: len(processed(root)) == count, 60), len(processed(root))
        recorded = rows(settings)
        assert len(recorded) == count == len({r["filename"] for r in recorded})
        # announced, or still in the outbox: the killed relay's lease (30 s) may hold some
        pending = outbox_keys(settings)
        expected = {r["request_id"] for r in recorded}
        found = read_topics(settings, ["platform.upload.assets"],
                            lambda m: {x["request_id"] for x in m} | pending >= expected, 15)
        assert {m["request_id"] for m in found} | pending == expected
        assert processed(root) == sorted(f"K{i:03d}_Step1.obj" for i in range(count))
        assert not any((root / "Failed").iterdir())
    finally:
        assert watcher.stop() == 0


def test_role_watcher_needs_watch_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WATCH_DIR"}
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "watcher"], cwd=ROOT,
                          env={**env, "WORKDIR": str(tmp_path)}, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and b"role watcher needs WATCH_DIR" in done.stderr
    (tmp_path / "d").mkdir()
    bad = subprocess.run([sys.executable, str(ROOT / "app.py"), "watcher"], cwd=ROOT,
                         env={**env, "WORKDIR": str(tmp_path), "WATCH_DIR": str(tmp_path / "d"),
                              "WATCH_RULES": "*.obj=unknown/obj"},
                         capture_output=True, timeout=60, check=False)
    assert bad.returncode == 2 and b"WATCH_RULES" in bad.stderr


def test_compressed_asset_announcements_describe_the_bytes_at_their_url(tmp_path: Path) -> None:
    """A lab OBJ stored gzip-compressed (issue 13 item 1): the announcement's and
    ``available``'s ``size`` and ``checksums`` are those of what their ``url`` serves; the
    content's are in ``uncompressed``. No validator serves assets here, so the quarantine
    URL stays up; the verdict comes through the announcement's callback."""
    env = watch_env(tmp_path, VALIDATORS="testareno:test")
    root = Path(env["WATCH_DIR"])
    root.mkdir(parents=True)
    mesh = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n" * 50
    content = {"size": len(mesh), "sha256": hashlib.sha256(mesh).hexdigest(),
               "sha1": hashlib.sha1(mesh).hexdigest()}  # noqa: S324
    gateway = Gateway(env).start()
    try:
        settings = Settings.from_env(gateway.env)
        (root / "C7_Step1.obj").write_bytes(mesh)
        [announced] = read_topics(settings, ["platform.upload.assets"], lambda m: len(m) >= 1)
        served = fetch(announced["url"])
        assert gzip.decompress(served) == mesh
        assert announced["size"] == len(served)
        assert announced["checksums"] == {"sha256": hashlib.sha256(served).hexdigest()}
        assert announced["compression"] == "gzip" and announced["uncompressed"] == content
        request = urllib.request.Request(
            announced["callback_url"], method="POST", data=json.dumps(
                {"validation": "success"}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200
        [available] = read_topics(settings, ["platform.upload.available"],
                                  lambda m: len(m) >= 1)
        served = fetch(available["url"])
        assert gzip.decompress(served) == mesh and available["url"] != announced["url"]
        assert available["size"] == len(served)
        assert available["checksums"] == {"sha256": hashlib.sha256(served).hexdigest()}
        assert available["compression"] == "gzip" and available["uncompressed"] == content
    finally:
        assert gateway.stop() == 0
