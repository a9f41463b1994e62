"""CPU per thread of a running gateway process (``/proc/<pid>/task/*/stat`` over an
interval), the threads named by py-spy (``py-spy dump``; ``pip install py-spy``). For the
profile of a benchmark while it runs, e.g. in another shell during ``latency.py``:

    python bench/thread_cpu.py PID [--seconds 8]

Threads of a pool (``io_0`` … ``io_15``) are summed under one name.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


def thread_names(pid: int) -> dict[str, str]:
    dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True,
                          text=True, check=False).stdout
    names = {}
    for line in dump.splitlines():
        found = re.match(r'Thread (\S+) \(\w+(?:, [^)]*)?\): "([^"]*)"', line)
        if found:
            tid = found.group(1)
            names[str(int(tid, 16)) if tid.startswith("0x") else tid] = found.group(2)
    return names


def ticks(pid: int) -> dict[str, tuple[int, int]]:
    """user and system ticks per thread id."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        found[tid] = (int(fields[11]), int(fields[12]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pid", type=int)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    names = thread_names(args.pid)
    before = ticks(args.pid)
    time.sleep(args.seconds)
    after = ticks(args.pid)
    cores: dict[str, list[float]] = {}
    for tid, (user, system) in after.items():
        if tid not in before:
            continue
        name = re.sub(r"_\d+$", "", names.get(tid, f"thread {tid}"))
        total = cores.setdefault(name, [0.0, 0.0])
        total[0] += (user - before[tid][0]) / TICK / args.seconds
        total[1] += (system - before[tid][1]) / TICK / args.seconds
    print(f"pid {args.pid}: {sum(u + s for u, s in cores.values()):.2f} cores over "
          f"{args.seconds:.0f} s")
    for name, (in_user, in_kernel) in sorted(cores.items(), key=lambda kv: -sum(kv[1])):
        if in_user + in_kernel >= 0.005:
            print(f"  {in_user + in_kernel:5.2f} cores (user {in_user:.2f}, kernel "
                  f"{in_kernel:.2f})  {name}")


if __name__ == "__main__":
    main()
