"""Wavefront OBJ mesh check used by the built-in OBJ validator.

``check_obj(stream, limits, compressed)`` reads a binary stream incrementally (1 MiB at a
time, never the whole file), gunzips it on the fly when it starts with the gzip magic
(``compressed=None``) or when told to (``compressed=True``), and returns an ``ObjReport``.
It never raises for bad input, only for I/O errors of the stream itself.

A mesh passes when it is UTF-8 text without control bytes and: it has at least one ``f``;
every ``v`` has 3, 4 (``w``) or 6 (``x y z r g b``) finite numbers, every ``vt`` 1 to 3,
every ``vn`` exactly 3; every index of ``f`` (forms ``v``, ``v/vt``, ``v//vn``,
``v/vt/vn``), ``l`` (at least 2 vertices) and ``p`` is non-zero and points at an element
defined before it, counted from the start (positive) or back from the end so far
(negative); a face has at least 3 vertices. Comments (``#``, also at the end of a line),
blank lines, ``o g s usemtl mtllib`` and unknown statements are ignored; ``\\r\\n`` line
ends, a leading UTF-8 BOM and ``\\``-continued lines are accepted. A failure's ``reason``
names the line: ``line 12: face index 9 points past the 8 vertices defined so far``.

Limits (``ObjLimits``): ``max_vertices`` 50 000 000, ``max_faces`` 100 000 000,
``max_line_bytes`` 64 KiB, ``max_uncompressed_bytes`` 4 GiB (applies to plain files too).

How it is fast: see ``validators.objfast``.

Why our own parser, measured by ``bench/obj_parsers.py`` on a 99 MB grid mesh with vt and
vn (2 CPUs, Python 3.11; times vary with machine load):

    parser                 MB/s      peak RSS growth
    check_obj              175-225   15 MB
    tinyobjloader 2.0rc13  130-170   207 MB
    trimesh 5.2            15-30     710 MB
    naive per-line loop    18-37     ~0

tinyobjloader (C++) is as fast, but keeps the whole mesh in memory (``ParseFromString``
even needs the whole text as one ``str``), has no limits, no gzip, and passes what we must
refuse: ``nan``, ``abc`` or a missing coordinate read as 0.0 without a word, binary junk
and an empty file are valid empty meshes, a 2-vertex face is a warning. It checks
positive indices only after the whole file (so a face may use a vertex defined later),
and then only warns, naming the file's last line rather than the face's (in
``tiny_obj_loader.h`` the bound check runs after the read loop); index 0 and bad negative
indices are errors with the right line. trimesh is slow, loads everything, accepts index
0, ``nan``, faces using later vertices, bad texture indices, junk and empty files, drops
2-vertex faces, and raises a bare ``IndexError`` (no line) for a vertex index out of range.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from validators.objfast import ARITY, VN, VT, FastRuns, V

_CHUNK = 1 << 20  # read and decompress in pieces of this size; tests shrink it

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_CONTROL = bytes(range(9)) + bytes(range(11, 13)) + bytes(range(14, 32)) + b"\x7f"
_CONTROL_RE = re.compile(b"[" + re.escape(_CONTROL) + b"]")
_FLOAT_RE = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(rb"[+-]?[0-9]+")
_NOT_FINITE = {b"nan", b"inf", b"infinity"}

_SINGULAR = ("vertex", "texture coordinate", "normal")
_ARITY_TEXT = {V: "3, 4 or 6", VT: "1 to 3", VN: "3"}


@dataclass(frozen=True)
class ObjLimits:
    max_vertices: int = 50_000_000
    max_faces: int = 100_000_000
    max_line_bytes: int = 64 * 1024
    max_uncompressed_bytes: int = 4 * 1024**3


@dataclass
class ObjReport:
    ok: bool
    reason: str | None
    vertices: int
    texcoords: int
    normals: int
    faces: int
    bytes: int


class _Invalid(Exception):
    """Bad input; the message is the report's reason."""


def check_obj(
    stream: BinaryIO, limits: ObjLimits = ObjLimits(), compressed: bool | None = None
) -> ObjReport:
    """Check the OBJ mesh read from ``stream``; see the module docstring for the rules."""
    return _check(stream, limits, compressed, fast=True)


def _check(stream: BinaryIO, limits: ObjLimits, compressed: bool | None, fast: bool) -> ObjReport:
    """``fast=False`` checks every line with the reference checker (for tests)."""
    checker = _Checker(limits, fast)
    reason = None
    try:
        checker.run(stream, compressed)
    except _Invalid as exc:
        reason = str(exc)
    counts = checker.counts
    return ObjReport(
        ok=reason is None,
        reason=reason,
        vertices=counts[V],
        texcoords=counts[VT],
        normals=counts[VN],
        faces=checker.faces,
        bytes=checker.size,
    )


# -- bytes in: plain or gzip, counted against the size limit ------------------------------


def _read(stream: BinaryIO) -> Iterator[bytes]:
    """The stream in pieces of at least ``_CHUNK`` bytes (short reads are gathered)."""
    parts: list[bytes] = []
    size = 0
    while data := stream.read(_CHUNK):
        parts.append(data)
        size += len(data)
        if size >= _CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def _gunzip(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress gzip (several members allowed) with bounded output per step."""
    inflater = zlib.decompressobj(wbits=31)
    started = False
    for data in pieces:
        while data:
            if inflater.eof:
                if not data.strip(b"\0"):  # zero padding after the last member
                    break
                inflater = zlib.decompressobj(wbits=31)
            started = True
            try:
                while True:
                    out = inflater.decompress(data, _CHUNK)
                    if out:
                        yield out
                    data = inflater.unconsumed_tail
                    if inflater.eof or (not data and len(out) < _CHUNK):
                        break
            except zlib.error as exc:
                raise _Invalid(f"corrupt gzip data ({exc})") from None
            data = inflater.unused_data if inflater.eof else b""
    if not started or not inflater.eof:
        raise _Invalid("truncated gzip")


def _peek(pieces: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """At least the first two bytes (for the gzip magic), and all the pieces."""
    first = b""
    for piece in pieces:
        first += piece
        if len(first) >= 2:
            break
    return first, _prepend(first, pieces)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


# -- the checker ---------------------------------------------------------------------------


class _Checker(FastRuns):
    def __init__(self, limits: ObjLimits, fast: bool = True) -> None:
        self.limits = limits
        self.fast = fast
        self.counts = [0, 0, 0]  # v, vt, vn defined so far
        self.faces = 0
        self.size = 0  # uncompressed bytes seen
        self.lineno = 1  # number of the first line of the next block

    def run(self, stream: BinaryIO, compressed: bool | None) -> None:
        first, pieces = _peek(_read(stream))
        gzipped = first.startswith(_GZIP_MAGIC) if compressed is None else compressed
        if gzipped:
            pieces = _gunzip(pieces)
        carry = b""
        for piece in pieces:
            self.size += len(piece)
            if self.size > self.limits.max_uncompressed_bytes:
                what = "uncompressed data" if gzipped else "file"
                raise _Invalid(f"{what} larger than {self.limits.max_uncompressed_bytes} bytes")
            buf = carry + piece if carry else piece
            cut = _last_line_end(buf)
            if cut:
                self.block(buf[:cut])
            carry = buf[cut:]
            if len(carry) > self.limits.max_line_bytes:
                head = carry[: self.limits.max_line_bytes + 1]
                found = _text_problems(head, partial=True)
                problem = (
                    found[0][1] if found else f"longer than {self.limits.max_line_bytes} bytes"
                )
                raise _Invalid(f"line {self.lineno}: {problem}")
        if carry:
            self.block(carry + b"\n")
        if self.size == 0:
            raise _Invalid("empty file")
        if self.faces == 0:
            raise _Invalid("no faces")

    def block(self, block: bytes) -> None:
        """Check whole lines; the first is line ``self.lineno``."""
        if self.lineno == 1 and block.startswith(_BOM):
            block = block[len(_BOM) :]
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        arr = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        bad = self._first_bad_line(block, ends)
        if bad is not None:
            offset, problem = bad
            if offset:
                self.block(block[:offset])
            raise _Invalid(f"line {self.lineno}: {problem}")
        if not self.fast or (b"\\" in block and b"\\\n" in block):
            self._lines(block, self.lineno)
        else:
            self._runs(block, arr, ends)
        self.lineno += len(ends)

    def _first_bad_line(self, block: bytes, ends: np.ndarray) -> tuple[int, str] | None:
        """(offset of the line, problem) for the first line with binary data, bad UTF-8
        or too many bytes."""
        found = _text_problems(block)
        lengths = np.diff(ends, prepend=-1) - 1
        too_long = np.flatnonzero(lengths > self.limits.max_line_bytes)
        if too_long.size:  # placed where the line goes over, as when it is still incomplete
            pos = int(ends[too_long[0]] - lengths[too_long[0]]) + self.limits.max_line_bytes
            found.append((pos, f"longer than {self.limits.max_line_bytes} bytes"))
        if not found:
            return None
        pos, problem = min(found)
        return block.rfind(b"\n", 0, pos) + 1, problem

    # -- reference path: line by line (the fast path is objfast.FastRuns) ---------------

    def _lines(self, data: bytes, lineno: int) -> None:
        """Check whole lines (``data`` ends with a newline), joining ``\\``-continued ones."""
        pending: bytes | None = None
        start = lineno
        for line in data.split(b"\n")[:-1]:
            if pending is None:
                start = lineno
            lineno += 1
            if line.endswith(b"\\"):
                pending = (pending or b"") + line[:-1] + b" "
                continue
            if pending is not None:
                line, pending = pending + line, None
            self._line(line, start)
        if pending is not None:
            self._line(pending, start)

    def _line(self, line: bytes, lineno: int) -> None:
        comment = line.find(b"#")
        if comment >= 0:
            line = line[:comment]
        tokens = line.split()
        if not tokens:
            return
        keyword = tokens[0]
        try:
            if keyword in (b"v", b"vt", b"vn"):
                self._coords(tokens, (b"v", b"vt", b"vn").index(keyword))
            elif keyword in _ELEMENTS:
                self._element(tokens, *_ELEMENTS[keyword])
        except _Invalid as exc:
            raise _Invalid(f"line {lineno}: {exc}") from None

    def _coords(self, tokens: list[bytes], kind: int) -> None:
        numbers = tokens[1:]
        if len(numbers) not in ARITY[kind]:
            raise _Invalid(
                f"{_SINGULAR[kind]} has {_many(len(numbers), 'number')}, "
                f"expected {_ARITY_TEXT[kind]}"
            )
        for token in numbers:
            if not _FLOAT_RE.fullmatch(token):
                finite = token.lower().lstrip(b"+-") not in _NOT_FINITE
                raise _Invalid(
                    f"{_SINGULAR[kind]} {_show(token)} is not a{' finite' * (not finite)} number"
                )
            if not math.isfinite(float(token)):
                raise _Invalid(f"{_SINGULAR[kind]} {_show(token)} is not a finite number")
        self.counts[kind] += 1
        if kind == V and self.counts[V] > self.limits.max_vertices:
            raise _Invalid(f"more than {self.limits.max_vertices} vertices")

    def _element(self, tokens: list[bytes], name: str, minimum: int, max_parts: int) -> None:
        refs = tokens[1:]
        if len(refs) < minimum:
            raise _Invalid(f"{name} has {_many(len(refs), 'vertex')}, at least {minimum} needed")
        for ref in refs:
            parts = ref.split(b"/")
            required = parts[::2] if len(parts) == 3 else parts  # v//vn may skip vt
            if len(parts) > max_parts or not all(required):
                raise _Invalid(f"{name} vertex {_show(ref)} is malformed")
            for role, part in enumerate(parts):
                if part:
                    self._index(part, role, name)
        if name == "face":
            self.faces += 1
            if self.faces > self.limits.max_faces:
                raise _Invalid(f"more than {self.limits.max_faces} faces")

    def _index(self, token: bytes, role: int, name: str) -> None:
        what = f"{name} index" if role == V else f"{name} {_SINGULAR[role]} index"
        if not _INT_RE.fullmatch(token):
            raise _Invalid(f"{what} {_show(token)} is not an integer")
        index, defined = int(token), self.counts[role]
        if index == 0:
            raise _Invalid(f"{what} 0 is invalid (OBJ indices start at 1)")
        if index > defined:
            raise _Invalid(
                f"{what} {index} points past the {_many(defined, _SINGULAR[role])} defined so far"
            )
        if index < -defined:
            raise _Invalid(
                f"{what} {index} points before the first of the "
                f"{_many(defined, _SINGULAR[role])} defined so far"
            )


# keyword -> (name in reasons, minimum number of vertices, most parts in v/vt/vn)
_ELEMENTS = {b"f": ("face", 3, 3), b"l": ("polyline", 2, 2), b"p": ("point", 1, 1)}


def _text_problems(data: bytes, partial: bool = False) -> list[tuple[int, str]]:
    """(offset, problem) for the first control byte and the first bad UTF-8 in ``data``;
    ``partial``: data may end inside a character."""
    found = []
    if len(data.translate(None, _CONTROL)) != len(data):
        pos = _CONTROL_RE.search(data).start()  # type: ignore[union-attr]
        found.append((pos, f"binary data (byte 0x{data[pos]:02x})"))
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not (partial and exc.reason == "unexpected end of data"):
                found.append((exc.start, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})"))
    return sorted(found)


def _last_line_end(buf: bytes) -> int:
    """Offset just past the last newline that does not end a ``\\``-continued line."""
    pos = buf.rfind(b"\n")
    while pos > 0 and (
        buf[pos - 1] == 0x5C or (buf[pos - 1] == 0x0D and buf[pos - 2 : pos - 1] == b"\\")
    ):
        pos = buf.rfind(b"\n", 0, pos)
    return pos + 1


def _many(count: int, singular: str) -> str:
    plural = "vertices" if singular == "vertex" else singular + "s"
    return f"{count} {singular if count == 1 else plural}"


def _show(token: bytes) -> str:
    text = token.decode("utf-8", "replace")
    return repr(text if len(text) <= 24 else text[:21] + "...")
