"""How long the gateway's threads sleep in SQLite's busy handler (issue 14): runs
``python app.py gateway [--workers N]`` on embedded defaults under the small-upload load
(wrk, 10 KB multipart, 16 connections) and traces its workers' sleeps with ``perf trace``
for a few seconds in the middle of the run.

    python bench/busy_sleeps.py [--workers 2] [--seconds 10] [--trace-seconds 4]

SQLite's busy handler waits for a lock with ``usleep`` (1, 2, 5, 10, 15, 20, 25, 25, 25,
50, 50, 100 ms), a relative ``clock_nanosleep`` on CLOCK_REALTIME; Python's ``time.sleep``
sleeps until an absolute CLOCK_MONOTONIC time, so the two are told apart. The write turns
(db/turn.py) show as ``flock`` calls; ``fsync``/``fdatasync`` calls are counted too.
Needs wrk and perf.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import threading
import time
from pathlib import Path

from common import banner, remove_workdir, start_gateway, temp_workdir
from small_uploads import run_wrk, write_lua

LINE = re.compile(r"\(\s*([\d.]+) ms\): (?:\S+/\d+ )?(\w+)\((.*)\)")


def summarise(trace: str) -> dict[str, object]:
    sleeps: collections.Counter[int] = collections.Counter()
    asleep = flock_ms = 0.0
    python = flocks = syncs = 0
    for line in trace.splitlines():
        match = LINE.search(line)
        if not match:
            continue
        duration, call, args = float(match.group(1)), match.group(2), match.group(3)
        if call in ("fsync", "fdatasync"):
            syncs += 1
        elif call == "flock":
            flocks += 1
            flock_ms += duration
        elif "which_clock" in args or "TIMER_ABSTIME" in args:
            python += 1
        else:
            sleeps[round(duration)] += 1
            asleep += duration
    return {"sleeps": sum(sleeps.values()), "asleep_ms": asleep,
            "by_ms": dict(sorted(sleeps.items())), "python_sleeps": python,
            "flocks": flocks, "flock_ms": flock_ms, "syncs": syncs}


def worker_pids(log: Path, fallback: int) -> list[int]:
    found = re.findall(r"supervisor started gateway(?:-\d+)? \(pid (\d+)\)", log.read_text())
    return [int(pid) for pid in found] or [fallback]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--trace-seconds", type=int, default=4)
    args = parser.parse_args()
    banner(f"busy-handler sleeps: role gateway, {args.workers} process(es), embedded, "
           f"10 KB uploads, 16 connections, perf trace for {args.trace_seconds} s")
    workdir = temp_workdir("busy")
    lua = write_lua(workdir, 10_000)
    role = ["gateway"] + (["--workers", str(args.workers)] if args.workers > 1 else [])
    gateway = start_gateway(workdir / "gw", {}, role=role)
    try:
        url = gateway.base + "/api/v1/upload"
        run_wrk(url, lua, 16, 2)  # warm-up
        pids = worker_pids(gateway.log, gateway.pid)
        result: dict[str, object] = {}
        load = threading.Thread(target=lambda: result.update(run_wrk(url, lua, 16, args.seconds)))
        load.start()
        time.sleep(max(0.0, (args.seconds - args.trace_seconds) / 2))
        out = workdir / "trace.txt"
        subprocess.run(["timeout", "-s", "INT", str(args.trace_seconds), "perf", "trace", "-o",
                        str(out), "-e", "clock_nanosleep,nanosleep,flock,fsync,fdatasync",
                        "-p", ",".join(map(str, pids))], check=False)
        load.join()
        found = summarise(out.read_text())
    finally:
        gateway.stop()
        remove_workdir(workdir)
    print(f"  {result['rps']:.0f} uploads/s  p50 {result['p50']:.1f} ms  p99 {result['p99']:.1f} ms")
    print(f"  in {args.trace_seconds} s of {len(pids)} process(es): {found['sleeps']} busy-handler "
          f"sleeps, {found['asleep_ms']:.0f} ms asleep (by ms: {found['by_ms']}); "
          f"{found['flocks']} flock calls ({found['flock_ms']:.0f} ms waiting in them); "
          f"{found['python_sleeps']} time.sleep calls; {found['syncs']} fsync/fdatasync calls "
          f"({found['syncs'] / max(1.0, float(result['rps']) * args.trace_seconds):.1f} per upload)")


if __name__ == "__main__":
    main()
