"""How long a burst of files dropped into WATCH_DIR at once takes to be announced, beside a
baseline measured in the same run, and the watcher's idle CPU.

    python bench/watcher_burst.py [--files 10000] [--size 10240] [--quiet 2]

- Baseline: the same files copied with sha256 and an fsync each (8 threads): the least a
  durable ingest must do, with no database, bus or watcher.
- Watcher: ``python app.py watcher`` on embedded defaults (localdisk, SQLite, the embedded
  bus; the default rules: ``.obj`` → ``assets``, stored gzip-compressed) with
  ``WATCH_QUIET_SECONDS`` = ``--quiet``. The files are written to a staging directory on
  the same file system, then renamed into ``WATCH_DIR`` one after the other as fast as
  possible (a burst); the clock runs from the first rename until every file's
  announcement has been read back from ``platform.upload.assets``. The quiet period is
  part of that time.
- Idle CPU: the watcher process's CPU time (``/proc/<pid>/stat``) over ``--idle`` seconds
  once the burst has drained, as a percentage of one core.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, Server, banner, free_port, remove_workdir

from bus import get_bus
from core.settings import Settings


def make_files(stage: Path, count: int, size: int) -> list[Path]:
    stage.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = stage / f"C{i:05d}_Step1.obj"
        path.write_bytes(os.urandom(size // 2 + 1).hex().encode()[:size])
        paths.append(path)
    return paths


def baseline(paths: list[Path], target: Path) -> float:
    target.mkdir()

    def copy(path: Path) -> str:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        with open(target / path.name, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return digest

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(copy, paths))
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Announcements(threading.Thread):
    """Reads platform.upload.assets and notes when each request id was first seen."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.bus = get_bus(settings)
        self.consumer = self.bus.consumer(f"bench-{time.monotonic_ns()}", ["platform.upload.assets"])
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.consumer.poll(0.2)
            if message is not None:  # a throw-away group: no commits to compete with the watcher
                self.seen.setdefault(json.loads(message.value)["request_id"], time.monotonic())

    def close(self) -> None:
        self.stopping.set()
        self.join(5)
        self.consumer.close()
        self.bus.close()


def run_watcher(base: Path, paths: list[Path], quiet: float, idle: float,
                extra_env: dict[str, str]) -> dict[str, float]:
    port = free_port()
    env = {"WORKDIR": str(base / "work"), "WATCH_DIR": str(base / "drop"),
           "LISTEN_PORT": str(port), "WATCH_QUIET_SECONDS": str(quiet), **extra_env}
    (base / "work").mkdir()
    server = Server(["python", str(ROOT / "app.py"), "watcher"], env, port, base / "work",
                    "/api/v1/health")
    reader = Announcements(Settings.from_env(env))
    reader.start()
    try:
        drop = base / "drop"
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        for path in paths:
            os.rename(path, drop / path.name)
        dropped = time.monotonic() - started
        while len(reader.seen) < len(paths):
            if server.process.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError(f"watcher stopped or too slow:\n{server.log.read_text()[-3000:]}")
            time.sleep(0.05)
        done = max(reader.seen.values()) - started
        burst_cpu = cpu_seconds(server.pid) - cpu_before
        first = min(reader.seen.values()) - started
        time.sleep(2.0 + quiet)  # moves, relay and progress settle
        before = cpu_seconds(server.pid)
        time.sleep(idle)
        idle_cpu = 100 * (cpu_seconds(server.pid) - before) / idle
        processed = sum(1 for _ in (drop / "Processed").iterdir())
    finally:
        reader.close()
        server.stop()
    return {"dropped": dropped, "first": first, "all": done, "idle_cpu": idle_cpu,
            "processed": processed, "burst_cpu": burst_cpu, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--quiet", type=float, default=2.0, help="WATCH_QUIET_SECONDS")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the watcher (e.g. WATCH_CONCURRENCY=16)")
    args = parser.parse_args()
    banner(f"watcher burst: {args.files} files of {args.size} bytes")
    base = Path(tempfile.mkdtemp(prefix="watcher-burst-"))
    try:
        copies = make_files(base / "stage-baseline", args.files, args.size)
        copy_seconds = baseline(copies, base / "copied")
        paths = make_files(base / "stage", args.files, args.size)
        extra = dict(item.split("=", 1) for item in args.env)
        found = run_watcher(base, paths, args.quiet, args.idle, extra)
    finally:
        remove_workdir(base)
    rate = args.files / found["all"]
    print(f"baseline  copy + sha256 + fsync, 8 threads:   {copy_seconds:6.1f} s "
          f"({args.files / copy_seconds:.0f} files/s)")
    print(f"watcher   burst renamed in:                  {found['dropped']:6.1f} s")
    print(f"watcher   first announcement after:          {found['first']:6.1f} s "
          f"(quiet period {args.quiet:g} s)")
    print(f"watcher   all {args.files} announced after:      {found['all']:6.1f} s "
          f"({rate:.0f} files/s; goal <= 30 s)")
    print(f"watcher   CPU time during the burst:         {found['burst_cpu']:6.1f} s "
          f"({1000 * found['burst_cpu'] / args.files:.1f} ms per file)")
    print(f"watcher   moved to Processed/:               {found['processed']:6d}")
    print(f"watcher   idle CPU over {args.idle:g} s:             {found['idle_cpu']:6.2f} % of one core")
    print(f"machine   load average (1 min) at the end:   {found['load']:6.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
