"""The session key in WORKDIR (auth/sessions.py) when roles start at once on one WORKDIR:
CI's concurrent start (tests/db/test_concurrent_start.py) once had a gateway exit with
FileExistsError on ``session.key``, created by another role between its read and its
create; a role could also read the key half-written. Every process gets the same whole
key, none fails."""
from __future__ import annotations

import os
from pathlib import Path

from auth.sessions import session_secret


def _race(workdir: Path, processes: int) -> set[bytes]:
    go_r, go_w = os.pipe()
    results: list[tuple[int, int]] = []
    for _ in range(processes):
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)  # all start at once
                key = session_secret({}, workdir)
                os.write(out_w, key)
                code = 0
            finally:
                os._exit(code)
        os.close(out_w)
        results.append((pid, out_r))
    os.close(go_r)
    os.write(go_w, b"x" * processes)
    os.close(go_w)
    keys = set()
    for pid, out_r in results:
        key = b""
        while chunk := os.read(out_r, 4096):
            key += chunk
        os.close(out_r)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "a process failed"
        keys.add(key)
    return keys


def test_processes_racing_for_the_session_key_all_get_the_same_whole_key(tmp_path: Path) -> None:
    for attempt in range(30):
        workdir = tmp_path / str(attempt)
        keys = _race(workdir, 6)
        assert len(keys) == 1 and len(next(iter(keys))) >= 32, keys
        assert (workdir / "session.key").read_bytes() in keys
        assert [p.name for p in workdir.iterdir()] == ["session.key"]  # no drafts left
        assert (workdir / "session.key").stat().st_mode & 0o777 == 0o600
