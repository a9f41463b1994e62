"""Profile the gateway under one of the benchmark loads with py-spy (sampling, all threads).

    python bench/profile_gateway.py large [--size-mib 1024]
    python bench/profile_gateway.py small [--seconds 10] [--role gateway] [--gil]
    python bench/profile_gateway.py steady [--seconds 10] --idle   (100 uploads/s, as latency.py)

Writes collapsed stacks to ``bench/profiles/<load>.txt`` and prints the functions with the
most samples (self, and inclusive) per thread.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, MiB, body_file, post_file, remove_workdir, start_gateway, temp_workdir

OUT = ROOT / "bench" / "profiles"


def summarize(path: Path, top: int = 25) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            incl[frame] += n
    print(f"{total} samples; by thread:")
    for name, n in threads.most_common(8):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("self:")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("inclusive:")
    for name, n in incl.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def per_thread(path: Path, top: int = 6) -> None:
    """For each thread, its most common innermost three frames (with --idle: where it waits)."""
    by_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        name = frames[0].split(": ", 1)[-1]
        by_thread[name][" <- ".join(f.split(" (")[0] for f in frames[-1:-4:-1])] += int(count)
    for name, counter in sorted(by_thread.items(), key=lambda kv: -sum(kv[1].values()))[:8]:
        total = sum(counter.values())
        print(f"== {name} ({total} samples)")
        for frames, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {frames}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("load", choices=["large", "small", "steady"])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--idle", action="store_true", help="include idle samples")
    parser.add_argument("--gil", action="store_true", help="only threads holding the GIL")
    parser.add_argument("--role", default="all", choices=["all", "gateway"])
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    out = OUT / f"{args.load}-{args.role}{'-gil' if args.gil else ''}.txt"
    workdir = temp_workdir("profile")
    gateway = start_gateway(workdir, role=[args.role])
    argv = ["py-spy", "record", "--pid", str(gateway.gateway_pid), "--rate", "250", "--threads",
            "--format", "raw", "--output", str(out), "--nonblocking",
            *(["--idle"] if args.idle else []), *(["--gil"] if args.gil else [])]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    try:
        if args.load == "large":
            body, ctype = body_file(workdir, args.size_mib * MiB)
            status, _, seconds = post_file(gateway.base, "/api/v1/upload", body, ctype)
            print(f"upload: {status} in {seconds:.2f}s")
        elif args.load == "steady":
            from latency import Uploader, steady
            steady(100, args.seconds, Uploader(gateway.base, "profile"))
        else:
            from small_uploads import run_wrk, write_lua
            lua = write_lua(workdir, 10_000)
            result = run_wrk(gateway.base + "/api/v1/upload", lua, 16, args.seconds)
            print(result["summary"])
    finally:
        spy.send_signal(2)
        spy.wait(30)
        gateway.stop()
        remove_workdir(workdir)
    summarize(out)
    per_thread(out)


if __name__ == "__main__":
    sys.exit(main())
