"""streaming-form-data vs python-multipart, in process, the way the gateway feeds them.

    python bench/multipart_parsers.py [--size-mib 256] [--small 20000]

Large: one body with a ``--size-mib`` file part fed in 64 KiB chunks (and in 1 MiB chunks,
the gateway's socket read size), the file bytes collected into a target that only counts
them (MB/s of body). Small: ``--small`` bodies of 10 KB, each through a new parser (what a
small upload costs: parser set-up, part headers, data), in microseconds per request. The
baseline of each row is a bare loop over the same chunks doing nothing but ``len``.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable

from common import MiB, banner, envelope
from python_multipart.multipart import MultipartParser, parse_options_header
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import BaseTarget


class Counter(BaseTarget):
    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def on_data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)


def sfd(ctype: str, chunks: list[bytes]) -> int:
    parser = StreamingFormDataParser(headers={"Content-Type": ctype})
    target = Counter()
    parser.register("file", target)
    for chunk in chunks:
        parser.data_received(chunk)
    return target.size


def pmp(ctype: str, chunks: list[bytes]) -> int:
    _, params = parse_options_header(ctype)
    size = 0
    headers: dict[bytes, bytes] = {}
    name = b""
    field = b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal field
        field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        nonlocal field
        headers[field.lower()] = headers.get(field.lower(), b"") + data[start:end]
        field = b""

    def on_headers_finished() -> None:
        nonlocal name
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal size
        if name == b"file":
            size += len(data[start:end])  # the gateway needs the bytes: copy, as sfd does

    def on_part_begin() -> None:
        headers.clear()

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data})
    for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    return size


def bare(ctype: str, chunks: list[bytes]) -> int:
    return sum(len(c) for c in chunks)


def split(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def best(func: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=20_000)
    args = parser.parse_args()
    banner("multipart parsers: streaming-form-data vs python-multipart")
    head, tail, ctype = envelope()
    payload = os.urandom(MiB) * args.size_mib
    body = head + payload + tail
    parsers = {"streaming-form-data": sfd, "python-multipart": pmp, "bare loop": bare}
    for chunk_size in (64 * 1024, MiB):
        chunks = split(body, chunk_size)
        for name, func in parsers.items():
            assert func(ctype, chunks) == len(payload) or name == "bare loop"
            seconds = best(lambda func=func, chunks=chunks: func(ctype, chunks))
            print(f"large {args.size_mib} MiB in {chunk_size // 1024:4d} KiB chunks  "
                  f"{name:20s} {len(body) / seconds / 1e6:8.0f} MB/s")
    small = head + os.urandom(10_000) + tail
    for name, func in parsers.items():
        assert func(ctype, [small]) == 10_000 or name == "bare loop"
        seconds = best(lambda func=func: [func(ctype, [small]) for _ in range(args.small)])
        print(f"small 10 KB, one chunk, new parser each  {name:20s} "
              f"{1e6 * seconds / args.small:8.1f} us/request")


if __name__ == "__main__":
    main()
