"""Issue 15: 1 GiB through tus in 64 MiB PATCHes against the same 1 GiB through multipart,
same gateway, same run (localdisk, sha256 both ways). Targets: tus throughput >= 0.8x
multipart's, the gateway's RSS growth during the tus upload <= 64 MiB.

    python bench/tus_upload.py [--size-mib 1024] [--patch-mib 64] [--rounds 3]

The client sends each PATCH body with sendfile from one payload file (the multipart body
file holds the same bytes between its envelope), so the load generator costs almost
nothing. Throughput = payload bytes / wall time from the creation POST (tus) or the
request start (multipart) to the last answer; best of ``--rounds``, rounds alternating,
and the ratio of each round's pair with their median (run-to-run noise on this shared VM
is larger than the gap measured). The body file is synced before the first round, whose
multipart upload would otherwise compete with its write-back.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import os
import statistics
import time
from pathlib import Path

from common import (
    MiB,
    RssSampler,
    banner,
    body_file,
    cpu_seconds,
    envelope,
    mib,
    post_file,
    remove_workdir,
    start_gateway,
    temp_workdir,
)

FILETYPE = base64.b64encode(b"application/vnd.redhat.testareno.bench+tgz").decode()


def request(base: str, method: str, path: str, headers: dict[str, str],
            body: Path | None = None, offset: int = 0, length: int = 0) -> http.client.HTTPResponse:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=900)
    conn.putrequest(method, path)
    for name, value in {"Tus-Resumable": "1.0.0", **headers}.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    if body is not None and length:
        with open(body, "rb") as handle:
            sent = 0
            while sent < length:
                sent += conn.sock.sendfile(handle, offset + sent, length - sent)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def tus_upload(base: str, body: Path, start: int, size: int, patch: int) -> float:
    """Seconds for one tus upload of ``size`` bytes read from ``body`` at ``start``."""
    started = time.perf_counter()
    created = request(base, "POST", "/api/v1/tus/", {
        "Upload-Length": str(size), "Upload-Metadata": f"filetype {FILETYPE}"})
    assert created.status == 201, created.status
    path = "/" + created.headers["Location"].split("/", 3)[3]
    offset = 0
    while offset < size:
        length = min(patch, size - offset)
        answer = request(base, "PATCH", path, {
            "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
            body, start + offset, length)
        assert answer.status == 204, answer.status
        offset = int(answer.headers["Upload-Offset"])
    return time.perf_counter() - started


def clear(workdir: Path) -> None:
    for bucket in ("upload-quarantine", "upload-perm", "upload-reject"):
        for path in (workdir / bucket).rglob("*"):
            if path.is_file():
                path.unlink()
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--patch-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size, patch = args.size_mib * MiB, args.patch_mib * MiB
    banner(f"tus upload: {args.size_mib} MiB in {args.patch_mib} MiB PATCHes against "
           "multipart, localdisk, sha256")
    workdir = temp_workdir("tus")
    body, ctype = body_file(workdir, size)
    start = len(envelope()[0])  # the payload's bytes inside the multipart body file
    os.sync()  # the body file's write-back is not the first round's
    # the gateway role only: no validator moves payloads while we measure
    gateway = start_gateway(workdir / "gateway", role=["gateway"])
    try:
        multipart, tus, growth, tus_cpu, mp_cpu = [], [], 0, [], []
        for _ in range(args.rounds):
            cpu = cpu_seconds(gateway.pid)
            status, answer, seconds = post_file(gateway.base, "/api/v1/upload", body, ctype)
            assert status == 202, (status, answer[:200])
            multipart.append(seconds)
            mp_cpu.append(cpu_seconds(gateway.pid) - cpu)
            clear(gateway.workdir)
            sampler = RssSampler(gateway.pid)
            cpu = cpu_seconds(gateway.pid)
            tus.append(tus_upload(gateway.base, body, start, size, patch))
            tus_cpu.append(cpu_seconds(gateway.pid) - cpu)
            growth = max(growth, sampler.stop())
            clear(gateway.workdir)
        mp_rate, tus_rate = size / min(multipart) / 1e6, size / min(tus) / 1e6
        print(f"multipart (baseline): {mp_rate:7.1f} MB/s  best of {args.rounds} "
              f"({', '.join(f'{s:.2f}' for s in multipart)} s), gateway CPU {min(mp_cpu):.2f} s")
        print(f"tus:                  {tus_rate:7.1f} MB/s  best of {args.rounds} "
              f"({', '.join(f'{s:.2f}' for s in tus)} s), gateway CPU {min(tus_cpu):.2f} s")
        print(f"ratio tus / multipart: {tus_rate / mp_rate:.2f} (target >= 0.8)")
        pairs = [m / t for m, t in zip(multipart, tus)]
        print("each round's pair: " + ", ".join(f"{ratio:.2f}" for ratio in pairs)
              + f"; median {statistics.median(pairs):.2f}")
        print(f"gateway RSS growth during tus: {mib(growth)} (target <= 64 MiB)")
    finally:
        gateway.stop()
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
