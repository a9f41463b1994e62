"""``python app.py watcher`` against FIFOs named like watched files (more than its workers),
a file it may not read and a name that would forge a log line: each ends in Failed/ once,
the log keeps one record per line, and SIGTERM still stops the process promptly."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e import ROOT, Gateway
from tests.helpers import wait_for
from tests.watcher.harness import watch_env
from tests.watcher.test_watcher_hostile import FORGED

# root reads any file: the watcher runs without the capabilities that allow it, so a file
# with mode 000 is unreadable to it as to any other user (setpriv, from util-linux)
NO_OVERRIDE = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


class Watcher(Gateway):
    """The watcher role in its own process, as a user that cannot read every file."""

    def start(self) -> Watcher:
        Path(self.env["WORKDIR"]).mkdir(parents=True, exist_ok=True)
        prefix = NO_OVERRIDE if os.geteuid() == 0 else []
        assert not prefix or shutil.which("setpriv"), "setpriv (util-linux) is missing"
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(ROOT / "app.py"), "watcher"], cwd=ROOT, env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait_for(self._healthy, timeout=30):
            self.stop(signal.SIGKILL)
            raise AssertionError(f"watcher did not start:\n{self.log.read_text()[-3000:]}")
        return self


def test_fifos_unreadable_files_and_forging_names_then_sigterm(tmp_path: Path) -> None:
    env = watch_env(tmp_path)
    root, failed = Path(env["WATCH_DIR"]), Path(env["WATCH_DIR"]) / "Failed"
    root.mkdir(parents=True)
    fifos = [f"C{i}_Step1.obj" for i in range(12)]  # more than WATCH_CONCURRENCY (8)
    for name in fifos:
        os.mkfifo(root / name)
    (root / "locked.obj").write_bytes(b"v 1 1 1\n")
    (root / "locked.obj").chmod(0)
    forging = f"x.obj\n{FORGED}.obj"
    (root / forging).write_bytes(b"v 2 2 2\n")
    (root / "C99_Step1.obj").write_bytes(b"v 3 3 3\n")
    watcher = Watcher(env, ["watcher"]).start()
    try:
        expected = [*fifos, "locked.obj", f"x.obj%0A{FORGED}.obj"]
        assert wait_for(lambda: all((failed / f"{n}.error.json").exists() for n in expected)
                        and (root / "Processed" / "C99_Step1.obj").exists(), 20), \
            sorted(os.listdir(failed))
        assert json.loads((failed / "locked.obj.error.json").read_text())["error"] == "unreadable"
        assert all(json.loads((failed / f"{n}.error.json").read_text())["error"]
                   == "not_regular_file" for n in fifos)
        started = time.monotonic()
        assert watcher.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - started < 15
    finally:
        if watcher.process is not None and watcher.process.poll() is None:
            watcher.process.kill()
            watcher.process.wait(10)
    lines = watcher.log.read_text().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    assert [line for line in lines if f"x.obj\\n{FORGED}.obj" in line]
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line]
    assert len([line for line in lines if "path=locked.obj failed (unreadable" in line]) == 1
