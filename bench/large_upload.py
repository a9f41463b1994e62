"""Targets 1 and 2: one large multipart upload to localdisk quarantine (sha256 included),
against the bare Tornado baseline writing the raw body to a file; RSS growth of the
gateway during it, and during ``--parallel`` such uploads at once.

    python bench/large_upload.py [--size-mib 1024] [--parallel 8] [--rounds 2]

Both servers run in the same WORKDIR file system; files are removed between rounds.
Throughput is the best of ``--rounds`` (MB/s = 10^6 bytes/s of file payload).
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

from common import (
    MiB,
    RssSampler,
    banner,
    body_file,
    cpu_seconds,
    mib,
    post_file,
    remove_workdir,
    start_baseline,
    start_gateway,
    temp_workdir,
)


def clear(directory) -> None:  # type: ignore[no-untyped-def]
    for path in directory.rglob("*"):
        if path.is_file() and not path.name.endswith((".log", ".key", ".sqlite",
                                                      ".sqlite-wal", ".sqlite-shm")):
            path.unlink()
    os.sync()  # no dirty pages of one run slow the next one down


def run(server, path: str, body, ctype: str, parallel: int = 1) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds, server CPU seconds) for ``parallel`` uploads of ``body`` at once."""
    cpu = cpu_seconds(server.pid)
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda _: post_file(server.base, path, body, ctype),
                                range(parallel)))
    for status, answer, _ in results:
        assert status == 202, (status, answer[:300])
    clear(server.workdir)
    return max(seconds for _, _, seconds in results), cpu_seconds(server.pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    banner(f"large upload: {args.size_mib} MiB multipart, localdisk, sha256 "
           f"(client: sendfile of one body file)")
    workdir = temp_workdir("large")
    body, ctype = body_file(workdir, size)
    baseline = start_baseline(workdir / "baseline")
    gateway = start_gateway(workdir / "gateway")
    try:
        base_runs, gw_runs, growth_one = [], [], 0
        for _ in range(args.rounds):
            base_runs.append(run(baseline, "/raw", body, ctype))
            sampler = RssSampler(gateway.gateway_pid)
            gw_runs.append(run(gateway, "/api/v1/upload", body, ctype))
            growth_one = max(growth_one, sampler.stop())
        base_s, base_cpu = min(base_runs)
        gw_s, gw_cpu = min(gw_runs)
        base_mbs, gw_mbs = size / base_s / 1e6, size / gw_s / 1e6
        print(f"1 upload   gateway {gw_mbs:6.0f} MB/s   baseline {base_mbs:6.0f} MB/s   "
              f"ratio {gw_mbs / base_mbs:.2f} (target >= 0.90)")
        print(f"           server CPU per GiB: gateway {gw_cpu * 1024 / args.size_mib:.2f} s, "
              f"baseline {base_cpu * 1024 / args.size_mib:.2f} s")
        print(f"           all rounds (s): gateway {[round(s, 2) for s, _ in gw_runs]}, "
              f"baseline {[round(s, 2) for s, _ in base_runs]}")
        print(f"           gateway RSS growth {mib(growth_one)} (target <= 64 MiB)")
        for label, query in (("+ fsync", "durable=1"),
                             ("+ fsync + sha256", "durable=1&sha256=1")):
            seconds = min(run(baseline, f"/raw?{query}", body, ctype)[0]
                          for _ in range(args.rounds))
            print(f"           for the analysis, baseline {label}: "
                  f"{size / seconds / 1e6:6.0f} MB/s (gateway at {seconds / gw_s:.2f} of it)")
        if args.parallel > 1:
            sampler = RssSampler(gateway.gateway_pid)
            seconds, _ = run(gateway, "/api/v1/upload", body, ctype, args.parallel)
            growth_many = sampler.stop()
            base_seconds, _ = run(baseline, "/raw", body, ctype, args.parallel)
            total = args.parallel * size
            print(f"{args.parallel} uploads  gateway {total / seconds / 1e6:6.0f} MB/s   "
                  f"baseline {total / base_seconds / 1e6:6.0f} MB/s   "
                  f"ratio {base_seconds / seconds:.2f} (aggregate)")
            print(f"           gateway RSS growth {mib(growth_many)}, "
                  f"{mib(growth_many - growth_one)} more than with one (target <= 64 MiB)")
    finally:
        gateway.stop()
        baseline.stop()
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
