"""What a multi-buffer MD5 would cost here (issue 17): the area checksums' ETag needs an
MD5 per part, and OpenSSL's MD5 (hashlib) is half the checksum pass's CPU (1.6-1.8 ns/B,
serial within a part). Parts are independent, so 16 of them can be hashed at once in the
lanes of AVX-512 registers (bench/md5x16.c, compiled here with the system's C compiler).
Prints the aggregate throughput with 16, 8, 4 and 2 parts to hash (the unused lanes are
computed anyway), beside hashlib's MD5 over the same parts, after checking every digest
against hashlib's. A probe: the gateway does not use it (bench/README.md, issue 17).

    python bench/md5_lanes.py [--part-mib 4]
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from common import MiB, banner

IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
LANES = 16


def build(workdir: Path) -> ctypes.CDLL:
    library = workdir / "md5x16.so"
    subprocess.run(["cc", "-O3", "-mavx512f", "-shared", "-fPIC", "-o", str(library),
                    str(Path(__file__).with_name("md5x16.c"))], check=True)
    lib = ctypes.CDLL(str(library))  # ctypes releases the GIL during the call
    lib.md5x16.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def md5_lanes(lib: ctypes.CDLL, data: bytearray, part: int, used: int) -> tuple[list[str], float]:
    """MD5s of ``used`` parts of ``part`` bytes (a multiple of 64) of ``data`` (the other
    lanes repeat them), and the seconds the parts' blocks took (padding apart)."""
    states = (ctypes.c_uint32 * (4 * LANES))(*[IV[i // LANES] for i in range(4 * LANES)])
    offsets = (ctypes.c_int32 * LANES)(*[(lane % used) * part for lane in range(LANES)])
    started = time.perf_counter()
    lib.md5x16(states, (ctypes.c_char * len(data)).from_buffer(data), offsets, part // 64)
    took = time.perf_counter() - started
    pad = bytearray(b"".join(b"\x80" + bytes(55) + struct.pack("<Q", part * 8)
                             for _ in range(LANES)))
    ends = (ctypes.c_int32 * LANES)(*[lane * 64 for lane in range(LANES)])
    lib.md5x16(states, (ctypes.c_char * len(pad)).from_buffer(pad), ends, 1)
    digests = [b"".join(struct.pack("<I", states[word * LANES + lane]) for word in range(4)).hex()
               for lane in range(used)]
    return digests, took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part-mib", type=int, default=4)
    args = parser.parse_args()
    banner("multi-buffer MD5 (AVX-512, 16 lanes) beside hashlib's MD5")
    if "avx512f" not in Path("/proc/cpuinfo").read_text() or not shutil.which("cc"):
        print("needs AVX-512F and a C compiler: skipped")
        return
    part = args.part_mib * MiB
    data = bytearray(os.urandom(LANES * part))
    view = memoryview(data)
    with tempfile.TemporaryDirectory() as workdir:
        lib = build(Path(workdir))
        digests, _ = md5_lanes(lib, data, part, LANES)
        expected = [hashlib.md5(view[i * part:(i + 1) * part]).hexdigest()  # noqa: S324
                    for i in range(LANES)]
        assert digests == expected, "a lane's MD5 differs from hashlib's"
        started = time.perf_counter()
        for i in range(LANES):
            hashlib.md5(view[i * part:(i + 1) * part]).digest()  # noqa: S324
        alone = (time.perf_counter() - started) / (LANES * part)
        print(f"hashlib md5: {1 / alone / 1e9:.2f} GB/s, {alone * 1e9:.2f} ns/B")
        for used in (16, 8, 4, 2):
            took = min(md5_lanes(lib, data, part, used)[1] for _ in range(3)) / (used * part)
            print(f"{used:2d} parts at once: {1 / took / 1e9:.2f} GB/s, {took * 1e9:.2f} ns/B "
                  f"({alone / took:.1f} x hashlib)")


if __name__ == "__main__":
    main()
