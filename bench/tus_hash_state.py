"""How a resumable upload's whole-payload sha256 (and sha1) survives a restart or a
switch to another gateway: the two options of issue 15, measured in the same run.

1. Persist the hash state at every checkpoint (rehashes, what core.resumable does):
   the cost per PATCH is serialise + deserialise + the bytes stored with the offset;
   the hashing itself must also not be slower than hashlib's.
2. Re-read the stored prefix once after a restart: the cost is reading back and hashing
   everything stored so far, each time the upload lands on a gateway that did not hash
   its prefix (after every restart, and with several gateways behind a balancer, on
   most PATCHes). Measured on localdisk from a cold page cache where possible; S3 cannot
   offer it at all (an unfinished multipart upload's parts are not readable).

    python bench/tus_hash_state.py [--prefix-mib 512]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time

import rehashes
from common import MiB, banner, remove_workdir, temp_workdir

BLOCK = MiB


def throughput(make, data: bytes) -> float:  # type: ignore[no-untyped-def]
    blocks = [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]
    best = 0.0
    for _ in range(3):
        hasher = make()
        started = time.perf_counter()
        for block in blocks:
            hasher.update(block)
        best = max(best, len(data) / (time.perf_counter() - started) / 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix-mib", type=int, default=512)
    args = parser.parse_args()
    banner("tus hash state: persist per checkpoint vs re-read the prefix after a restart")
    data = os.urandom(256 * MiB)
    print(f"sha256 hashlib  {throughput(hashlib.sha256, data):7.0f} MB/s   "
          f"rehashes {throughput(rehashes.PySha256, data):7.0f} MB/s")
    print(f"sha1   hashlib  {throughput(hashlib.sha1, data):7.0f} MB/s   "
          f"rehashes {throughput(rehashes.PySha1, data):7.0f} MB/s")
    sha256, sha1 = rehashes.PySha256(), rehashes.PySha1()
    sha256.update(data[:12345])
    sha1.update(data[:12345])
    rounds = 20000
    started = time.perf_counter()
    for _ in range(rounds):
        rehashes.PySha256.deserialize(sha256.serialize())
        rehashes.PySha1.deserialize(sha1.serialize())
    per_patch = (time.perf_counter() - started) / rounds
    size = len(sha256.serialize()) + len(sha1.serialize())
    print(f"option 1, persist: {per_patch * 1e6:.2f} us and {size} bytes per checkpoint "
          "(sha256 + sha1 state)")
    workdir = temp_workdir("tus-hash")
    try:
        path = workdir / "prefix"
        with open(path, "wb") as out:
            for _ in range(args.prefix_mib // 256):
                out.write(data)
            out.write(data[:(args.prefix_mib % 256) * MiB])
            out.flush()
            os.fsync(out.fileno())
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        started = time.perf_counter()
        check256, check1 = hashlib.sha256(), hashlib.sha1()
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                check256.update(block)
                check1.update(block)
        reread = time.perf_counter() - started
        print(f"option 2, re-read: {reread:.3f} s for a {args.prefix_mib} MiB prefix "
              f"({reread / args.prefix_mib * 1024:.2f} s per GiB), once per restart or "
              "gateway switch")
        print(f"ratio: one re-read of this prefix costs as much as "
              f"{reread / per_patch:,.0f} persisted checkpoints")
    finally:
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
