"""Issue 14: ``python app.py`` runs each role in its own process under the supervisor
(core/supervisor.py, app.run_all): one log stream naming each process, a child that dies is
started again and the loop keeps working, SIGTERM stops every child and the supervisor
exits 0; ``--one-process`` keeps every role in one process."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from tests.e2e import ROOT, Gateway, check_round_trip
from tests.helpers import wait_for

STARTED = re.compile(r"supervisor started (\w+) \(pid (\d+)\)")


def children(gateway: Gateway) -> dict[str, int]:
    """The latest pid of each child the supervisor started."""
    return {name: int(pid) for name, pid in STARTED.findall(gateway.log.read_text())}


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_each_role_in_its_own_process_a_killed_one_restarts_sigterm_stops_all(
        tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}).start()
    try:
        assert wait_for(lambda: len(children(gateway)) == 4, 30)
        pids = children(gateway)
        assert set(pids) == {"gateway", "validators", "bundler", "checksummer"}
        assert gateway.process is not None
        assert gateway.process.pid not in pids.values()
        assert len(set(pids.values())) == 4
        log = gateway.log.read_text()
        assert f"gateway[{pids['gateway']}] app gateway listening" in log
        assert wait_for(lambda: f"validators[{pids['validators']}] app validator for testareno "
                        "running" in gateway.log.read_text(), 30)

        os.kill(pids["validators"], signal.SIGKILL)
        assert wait_for(lambda: children(gateway)["validators"] != pids["validators"], 30), \
            gateway.log.read_text()[-3000:]
        assert "validators (exit -9) died; restarting it" in gateway.log.read_text()
        # the restarted validators validate: the whole loop still ends in available
        check_round_trip(gateway, Settings.from_env(gateway.env), "success")
        final = children(gateway)
    finally:
        code = gateway.stop()
    assert code == 0
    assert not [name for name, pid in final.items() if alive(pid)]
    assert "supervisor stopped" in gateway.log.read_text()


def test_sigkill_of_the_supervisor_takes_its_children(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}).start()
    assert wait_for(lambda: len(children(gateway)) == 4, 30)
    pids = children(gateway)
    gateway.stop(signal.SIGKILL)
    assert wait_for(lambda: not any(alive(pid) for pid in pids.values()), 30)
    # the same port again at once (a child may still be dying: SO_REUSEPORT)
    again = Gateway({"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": str(gateway.port)}).start()
    assert again.upload(b"after a SIGKILL")[0] == 202
    assert again.stop() == 0


def test_one_process_keeps_every_role_in_one(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}, ["--one-process"]).start()
    try:
        check_round_trip(gateway, Settings.from_env(gateway.env), "success")
        assert "supervisor" not in gateway.log.read_text()
    finally:
        assert gateway.stop() == 0


def test_a_child_with_a_configuration_error_stops_everything_with_exit_2(
        tmp_path: Path) -> None:
    """The port is checked by the supervisor before any child starts."""
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(ROOT / "app.py")], cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "WORKDIR": str(tmp_path), "LISTEN_PORT": str(port),
                 "LISTEN_ADDRESS": "127.0.0.1"}, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "LISTEN_ADDRESS/LISTEN_PORT: cannot listen on 127.0.0.1" in done.stderr
