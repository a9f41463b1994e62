"""Target 5: a large upload to S3 (moto server on loopback, in its own process) streams in
parts: neither the whole body on disk nor in memory. Prints throughput, the gateway's RSS
growth and peak (VmHWM), the part count (from the ETag), whether anything was spooled
under WORKDIR, and the baseline of the same run: boto3's own multipart upload of the same
bytes to the same server (8 MiB parts, one thread, like the gateway's writer).

    python bench/s3_upload.py [--size-mib 1024]
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time

import boto3
from boto3.s3.transfer import TransferConfig
from common import (
    ROOT,
    MiB,
    RssSampler,
    banner,
    body_file,
    free_port,
    mib,
    post_file,
    proc_status,
    remove_workdir,
    start_gateway,
    temp_workdir,
)

MOTO = ("import sys, time\nfrom moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
        "server.start()\nprint('ready', flush=True)\nwhile True: time.sleep(3600)\n")
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
         "AWS_DEFAULT_REGION": "us-east-1"}


def du(path) -> int:  # type: ignore[no-untyped-def]
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Blocks(io.RawIOBase):
    """``size`` bytes of the repeated 1 MiB block, as a readable stream."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(MiB)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left, MiB)
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MiB
    banner(f"S3 upload: {args.size_mib} MiB multipart to moto (loopback)")
    workdir = temp_workdir("s3")
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", MOTO, str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **CREDS})
    assert moto.stdout is not None and moto.stdout.readline().startswith("ready")
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(CREDS)
    gateway = None
    try:
        body, ctype = body_file(workdir, size)
        gateway = start_gateway(workdir / "gateway", {
            "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": endpoint, **CREDS})
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="bench-baseline")
        started = time.perf_counter()
        client.upload_fileobj(Blocks(size), "bench-baseline", "baseline", Config=TransferConfig(
            multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, use_threads=False))
        base_s = time.perf_counter() - started
        disk_before = du(workdir / "gateway")
        sampler = RssSampler(gateway.pid)
        peak_disk = [0]
        stop = threading.Event()

        def watch_disk() -> None:
            while not stop.wait(0.2):
                peak_disk[0] = max(peak_disk[0], du(workdir / "gateway") - disk_before)

        watcher = threading.Thread(target=watch_disk, daemon=True)
        watcher.start()
        status, answer, seconds = post_file(gateway.base, "/api/v1/upload", body, ctype)
        growth = sampler.stop()
        stop.set()
        watcher.join()
        assert status == 202, answer[:300]
        hwm = proc_status(gateway.pid, "VmHWM")
        keys = client.list_objects_v2(Bucket="upload-quarantine").get("Contents", [])
        etag = keys[-1]["ETag"].strip('"') if keys else "?"
        gw_mbs, base_mbs = size / seconds / 1e6, size / base_s / 1e6
        print(f"gateway  {gw_mbs:6.0f} MB/s   baseline (boto3 multipart, same server) "
              f"{base_mbs:6.0f} MB/s   ratio {gw_mbs / base_mbs:.2f}")
        print(f"gateway RSS growth {mib(growth)}, VmHWM {mib(hwm)}; object ETag {etag} "
              f"({etag.split('-')[-1] if '-' in etag else 1} parts); largest growth of "
              f"WORKDIR during the upload {mib(peak_disk[0])}")
    finally:
        if gateway is not None:
            gateway.stop()
        moto.terminate()
        moto.wait(10)
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
