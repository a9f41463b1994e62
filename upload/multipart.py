"""Streaming multipart/form-data on top of streaming-form-data (a Cython parser).

The parser calls targets synchronously; ``PartTarget`` only queues what it receives, and
the handler drains the queue after each network chunk and awaits the storage writes, so
backpressure reaches the socket. Why streaming-form-data and not python-multipart: see
bench/multipart_parsers.py (it parses several times faster on large bodies).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from upload.errors import ApiError

FILE_PARTS = ("file", "upload")
METADATA_PART = "metadata"
MAX_METADATA = 64 * 1024
TAIL = 1024

CONTENT_TYPE = re.compile(
    r"^application/vnd\.redhat\.(?P<service>[a-z0-9_-]+)\.(?P<category>[A-Za-z0-9_.-]+?)"
    r"(?:\+(?P<ext>[A-Za-z0-9.-]+))?$"
)


@dataclass(frozen=True)
class Route:
    service: str
    category: str
    content_type: str


def route(content_type: str | None, valid_services: tuple[str, ...]) -> Route:
    """Service and category from the file part's own Content-Type."""
    value = (content_type or "").split(";", 1)[0].strip()
    match = CONTENT_TYPE.match(value)
    if not match:
        raise ApiError("unsupported_media_type",
                       f"file part content type {value[:200]!r} is not "
                       "application/vnd.redhat.<service>.<category>[+ext]")
    if match["service"] not in valid_services:
        raise ApiError("unsupported_service",
                       f"service {match['service']!r} is not one of {', '.join(valid_services)}")
    return Route(match["service"], match["category"], value)


def _boundary(headers: object) -> bytes:
    content_type = headers.get("Content-Type", "")  # type: ignore[attr-defined]
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and 0 < len(value.strip('"')) <= 200:
            return value.strip('"').encode("latin-1", "replace")
    raise ApiError("malformed_multipart", "multipart Content-Type without a usable boundary")


class PartTarget(BaseTarget):
    """Collects one part's chunks until the handler takes them."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.chunks: list[bytes] = []
        self.starts = 0
        self.finished = False

    def on_start(self) -> None:
        self.starts += 1

    def on_data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def on_finish(self) -> None:
        self.finished = True

    def take(self) -> list[bytes]:
        chunks, self.chunks = self.chunks, []
        return chunks


class MultipartStream:
    """Feed network chunks; then read ``file`` (the first file part seen) and
    ``metadata``."""

    def __init__(self, headers: dict[str, str] | object) -> None:
        try:
            self._parser = StreamingFormDataParser(headers=headers)  # type: ignore[arg-type]
        except (ParseFailedException, ValueError, KeyError, TypeError) as exc:
            raise ApiError("malformed_multipart", f"bad multipart Content-Type: {exc}") from None
        boundary = _boundary(headers)
        self._ender = b"--" + boundary + b"--"
        self._tail = b""
        self.targets = {name: PartTarget(name) for name in (*FILE_PARTS, METADATA_PART)}
        for name, target in self.targets.items():
            self._parser.register(name, target)
        self.metadata_size = 0

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-TAIL:])[-TAIL:]
        try:
            self._parser.data_received(chunk)
        except ParseFailedException as exc:
            raise ApiError("malformed_multipart", f"malformed multipart body: {exc}") from None
        if sum(self.targets[name].starts for name in FILE_PARTS) > 1:
            raise ApiError("malformed_multipart", "more than one file part")
        if self.targets[METADATA_PART].starts > 1:
            raise ApiError("malformed_metadata", "more than one metadata part")
        metadata = self.targets[METADATA_PART]
        self.metadata_size = sum(len(c) for c in metadata.chunks)
        if self.metadata_size > MAX_METADATA:
            raise ApiError("malformed_metadata", f"metadata part exceeds {MAX_METADATA} bytes")

    @property
    def complete(self) -> bool:
        """True once the closing boundary has arrived (an epilogue may follow it)."""
        return self._ender in self._tail

    @property
    def file(self) -> PartTarget | None:
        for name in FILE_PARTS:
            if self.targets[name].starts:
                return self.targets[name]
        return None

    def metadata_bytes(self) -> bytes | None:
        target = self.targets[METADATA_PART]
        return b"".join(target.chunks) if target.starts else None
