"""Upload areas (issue 17): 10 × 100 MB staged directly to S3 (moto server on loopback, in
its own process) through the gateway's direct-upload capability (presigned UploadPart
URLs, 16 MiB parts, PUT with requests), then checksummed as the checksum workers do
(areas/checksums.py: sha1, sha256, crc32c and the S3 ETag in one pass, three hashing
threads, the next block read meanwhile). Baseline of the same run: sha256 alone over the
same bytes, read the same way. Also the same two figures over bytes in memory (the CPU
alone). Target: checksum throughput ≥ 0.6 × sha256 alone.

    python bench/areas.py [--files 10] [--size-mb 100] [--rounds 2]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from common import ROOT, banner, free_port, remove_workdir, temp_workdir

from areas.checksums import FileChecksums, checksum_stream, read_block
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


def sha256_alone(storage, keys: list[str], reader: ThreadPoolExecutor) -> float:  # type: ignore[no-untyped-def]
    """Seconds to read every object and sha256 it (the next block read meanwhile)."""
    started = time.perf_counter()
    for key in keys:
        with storage.open_reader("quarantine", key) as stream:
            digest = hashlib.sha256()
            pending = reader.submit(read_block, stream)
            while block := pending.result():
                pending = reader.submit(read_block, stream)
                digest.update(block)
    return time.perf_counter() - started


def checksummed(storage, keys: list[str], part_size: int, hashers: ThreadPoolExecutor,  # type: ignore[no-untyped-def]
                reader: ThreadPoolExecutor) -> float:
    started = time.perf_counter()
    for key in keys:
        with storage.open_reader("quarantine", key) as stream:
            checksum_stream(stream, part_size, hashers, reader)
    return time.perf_counter() - started


def in_memory(data: bytes, part_size: int, hashers: ThreadPoolExecutor) -> tuple[float, float]:
    block = 8 * MiB
    started = time.perf_counter()
    digest = hashlib.sha256()
    for i in range(0, len(data), block):
        digest.update(data[i:i + block])
    alone = time.perf_counter() - started
    started = time.perf_counter()
    sums = FileChecksums(part_size)
    for i in range(0, len(data), block):
        sums.update(data[i:i + block], hashers)
    return alone, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
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
    hashers = ThreadPoolExecutor(3)
    reader = ThreadPoolExecutor(1)
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
        alone_s, sums_s = [], []
        for _ in range(args.rounds):  # interleaved, best of each: a shared machine drifts
            alone_s.append(sha256_alone(storage, keys, reader))
            sums_s.append(checksummed(storage, keys, part_size, hashers, reader))
        alone, sums = total / MB / min(alone_s), total / MB / min(sums_s)
        print(f"via moto:  sha256 alone {alone:.0f} MB/s; sha1+sha256+crc32c+ETag {sums:.0f} "
              f"MB/s; ratio {sums / alone:.2f} (target >= 0.60)")
        mem_alone, mem_sums = in_memory(base, part_size, hashers)
        size = len(base) / MB
        print(f"in memory: sha256 alone {size / mem_alone:.0f} MB/s; sha1+sha256+crc32c+ETag "
              f"{size / mem_sums:.0f} MB/s; ratio {mem_alone / mem_sums:.2f} "
              f"({os.cpu_count()} CPUs)")
        storage.close()
    finally:
        hashers.shutdown()
        reader.shutdown()
        moto.terminate()
        moto.wait(10)
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
