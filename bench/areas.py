"""Upload areas (issue 17): 10 × 100 MB staged directly to S3 (moto server on loopback, in
its own process) through the gateway's direct-upload capability (presigned UploadPart
URLs, 16 MiB parts, PUT with requests), then checksummed as the checksum workers do
(areas/checksums.py: sha1, sha256, crc32c and the S3 ETag in one pass, read in this
thread, hashed on lanes). Baseline of the same run: sha256 alone over the same objects,
read the same way (``hash_stream``, sha256 on one lane). Rounds interleaved; each prints
its figures and the CPU they took (this process, moto's), in ns per byte; then the best
of each, the ratio per round, the ceiling that the checksums' CPU on these cores sets,
and each hash's cost alone in memory. Target: checksum throughput ≥ 0.6 × sha256 alone.

    python bench/areas.py [--files 10] [--size-mb 100] [--rounds 3]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import crc32c
import requests
from common import ROOT, banner, free_port, remove_workdir, temp_workdir

from areas.checksums import checksum_stream, hash_stream
from areas.worker import CHECKSUM_FILES
from core.settings import Settings
from storage import get_storage
from storage.direct import direct_uploads, part_count, part_size_for

MB = 1_000_000
MiB = 1024 * 1024
MOTO = ("import sys, time\nfrom moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
        "server.start()\nprint('ready', flush=True)\nwhile True: time.sleep(3600)\n")
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
         "AWS_DEFAULT_REGION": "us-east-1"}


def stage(storage: object, key: str, data: bytes, session: requests.Session) -> int:
    direct = direct_uploads(storage)
    assert direct is not None
    part_size = part_size_for(len(data), 16 * MiB)
    state = direct.start_direct("quarantine", key)
    parts = []
    for n in range(1, part_count(len(data), part_size) + 1):
        url = direct.direct_part_url("quarantine", key, state, n, part_size, 3600)
        response = session.put(url, data=data[(n - 1) * part_size: n * part_size], timeout=300)
        response.raise_for_status()
        parts.append((n, response.headers["ETag"]))
    direct.complete_direct("quarantine", key, state, parts)
    return part_size


def ns(seconds: float, size: int) -> str:
    return f"{seconds * 1e9 / size:.2f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], None], moto: int) -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds and moto's, of ``run()``."""
    mine, theirs = cpu_seconds(os.getpid()), cpu_seconds(moto)
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started, cpu_seconds(os.getpid()) - mine,
            cpu_seconds(moto) - theirs)


def sha256_of(storage: Any, key: str) -> None:
    """The same reader as the checksums (hash_stream: read in this thread), sha256 on a
    lane of its own."""
    digest = hashlib.sha256()

    def feed(part: int, block: bytes) -> None:
        digest.update(block)
    with storage.open_reader("quarantine", key) as stream:
        hash_stream(stream, [feed])


def checksums_of(storage: Any, key: str, part_size: int) -> None:
    with storage.open_reader("quarantine", key) as stream:
        checksum_stream(stream, part_size)


def each(keys: list[str], at_once: int, run: Callable[[str], None]) -> Callable[[], None]:
    """``run`` every key, ``at_once`` at a time (as the checksummer takes its jobs)."""
    def go() -> None:
        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(run, keys))
    return go


def per_hash(data: bytes, part_size: int) -> dict[str, float]:
    """ns per byte of each hash alone on one thread, and of checksum_stream, in memory."""
    view, block, costs = memoryview(data), 8 * MiB, {}
    for name in ("sha256", "sha1", "md5"):
        digest = hashlib.new(name)
        started = time.perf_counter()
        for i in range(0, len(data), block):
            digest.update(view[i:i + block])
        costs[name] = (time.perf_counter() - started) * 1e9 / len(data)
    started, crc = time.perf_counter(), 0
    for i in range(0, len(data), block):
        crc = crc32c.crc32c(view[i:i + block], crc)
    costs["crc32c"] = (time.perf_counter() - started) * 1e9 / len(data)
    started = time.perf_counter()
    checksum_stream(io.BytesIO(data), part_size)
    costs["checksum_stream"] = (time.perf_counter() - started) * 1e9 / len(data)
    return costs


def measure(storage: Any, keys: list[str], part_size: int, at_once: int, rounds: int,
            moto: int) -> None:
    """Rounds of sha256 alone then the checksums, ``at_once`` files at a time each."""
    total, cores = len(keys) * storage.size("quarantine", keys[0]), os.cpu_count() or 1
    Times = tuple[float, float, float]
    runs: list[tuple[Times, Times]] = []
    for n in range(rounds):  # interleaved: a shared machine drifts
        alone = timed(each(keys, at_once, lambda key: sha256_of(storage, key)), moto)
        sums = timed(each(keys, at_once, lambda key: checksums_of(storage, key, part_size)),
                     moto)
        runs.append((alone, sums))
        print(f"{at_once} at once, round {n + 1}: sha256 alone {total / MB / alone[0]:.0f} "
              f"MB/s (CPU {ns(alone[1], total)} + moto {ns(alone[2], total)} ns/B); "
              f"sha1+sha256+crc32c+ETag {total / MB / sums[0]:.0f} MB/s "
              f"(CPU {ns(sums[1], total)} + moto {ns(sums[2], total)} ns/B); "
              f"ratio {alone[0] / sums[0]:.2f}", flush=True)
    ratios = sorted(alone[0] / sums[0] for alone, sums in runs)
    best_alone = min(alone for alone, _ in runs)
    best_sums = min(sums for _, sums in runs)
    print(f"{at_once} at once, via moto: sha256 alone {total / MB / best_alone[0]:.0f} MB/s; "
          f"sha1+sha256+crc32c+ETag {total / MB / best_sums[0]:.0f} MB/s (best of "
          f"{rounds}); ratio {best_alone[0] / best_sums[0]:.2f}, per round "
          f"{ratios[0]:.2f}-{ratios[-1]:.2f} (target >= 0.60)")
    cpu = (best_sums[1] + best_sums[2]) / cores
    print(f"{at_once} at once, ceiling: the checksums' CPU (this process and moto, "
          f"{ns(best_sums[1] + best_sums[2], total)} ns/B) spread on {cores} cores takes "
          f"{cpu * 1e9 / total:.2f} ns/B: ratio at most {best_alone[0] / cpu:.2f} beside "
          f"the best sha256 alone; sha256 alone's CPU ({ns(best_alone[1] + best_alone[2], total)}"
          f" ns/B) over the checksums': "
          f"{(best_alone[1] + best_alone[2]) / (best_sums[1] + best_sums[2]):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--at-once", type=int, default=CHECKSUM_FILES,
                        help="files at a time, besides one at a time (the checksummer's)")
    args = parser.parse_args()
    total = args.files * args.size_mb * MB
    banner(f"upload areas: {args.files} × {args.size_mb} MB staged directly to moto, "
           "checksummed")
    workdir = temp_workdir("areas")
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", MOTO, str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **CREDS})
    assert moto.stdout is not None and moto.stdout.readline().startswith("ready")
    os.environ.update(CREDS)
    try:
        settings = Settings.from_env({"WORKDIR": str(workdir), "STORAGE_DRIVER": "s3",
                                      "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        storage = get_storage(settings)
        base = os.urandom(args.size_mb * MB)
        keys, part_size = [], 0
        started = time.perf_counter()
        with requests.Session() as session:
            session.trust_env = False
            for n in range(args.files):
                key = f"areas/bench/{n:02d}"
                data = n.to_bytes(4, "big") + base[4:]
                part_size = stage(storage, key, data, session)
                keys.append(key)
        staged = time.perf_counter() - started
        print(f"staged: {total / MB:.0f} MB in {staged:.1f} s ({total / MB / staged:.0f} MB/s), "
              f"parts of {part_size // MiB} MiB")
        for at_once in dict.fromkeys([1, args.at_once]):
            measure(storage, keys, part_size, at_once, args.rounds, moto.pid)
        costs = per_hash(base, part_size)
        print("in memory, one thread, ns/B: " + ", ".join(
            f"{name} {cost:.2f}" for name, cost in costs.items() if name != "checksum_stream")
            + f" (sum {sum(v for k, v in costs.items() if k != 'checksum_stream'):.2f}); "
            f"checksum_stream {costs['checksum_stream']:.2f} ns/B wall, "
            f"{costs['sha256'] / costs['checksum_stream']:.2f} x sha256 alone")
        storage.close()
    finally:
        moto.terminate()
        moto.wait(10)
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
