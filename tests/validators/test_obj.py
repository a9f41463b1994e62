"""The OBJ mesh check: real meshes from small generators pass, each broken rule fails with
a reason naming the line, gzip is read incrementally, chunk boundaries do not matter, and
the fast path always agrees with the line-by-line reference."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from typing import BinaryIO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from validators import obj
from validators.obj import ObjLimits, ObjReport, check_obj

# -- generators ----------------------------------------------------------------------------

CUBE_V = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
CUBE_QUADS = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]


def cube_obj(form: str = "v/vt/vn", negative: bool = False) -> bytes:
    """A unit cube; ``form`` is the face vertex form, ``negative`` uses relative indices."""
    out = ["# cube", "mtllib cube.mtl", "o cube"]
    out += [f"v {x} {y} {z}" for x, y, z in CUBE_V]
    out += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1"]
    out += ["vn 0 0 -1", "vn 0 0 1", "vn 0 -1 0", "vn 0 1 0", "vn -1 0 0", "vn 1 0 0"]
    out += ["usemtl white", "s off"]
    for normal, quad in enumerate(CUBE_QUADS, start=1):
        refs = []
        for corner, vertex in enumerate(quad, start=1):
            v, vt, vn = (
                (vertex - 9, corner - 5, normal - 7) if negative else (vertex, corner, normal)
            )
            refs.append(
                {
                    "v": f"{v}",
                    "v/vt": f"{v}/{vt}",
                    "v//vn": f"{v}//{vn}",
                    "v/vt/vn": f"{v}/{vt}/{vn}",
                }[form]
            )
        out.append("f " + " ".join(refs))
    return ("\n".join(out) + "\n").encode()


def grid_obj(
    n: int,
    texcoords: bool = True,
    normals: bool = True,
    negative: bool = False,
    quads: bool = False,
) -> bytes:
    """An n x n vertex grid, two triangles (or one quad) per cell."""
    out = [f"# grid {n}x{n}", "o grid"]
    out += [f"v {j / n:.6f} {i / n:.6f} {(i * j) % 7 / 7:.6f}" for i in range(n) for j in range(n)]
    if texcoords:
        out += [f"vt {j / n:.6f} {i / n:.6f}" for i in range(n) for j in range(n)]
    if normals:
        out += ["vn 0.000000 0.000000 1.000000"] * (n * n)
    out += ["g surface", "usemtl none", "s 1"]
    count = n * n
    sep = "/" if texcoords else "//" if normals else ""
    for i in range(n - 1):
        for j in range(n - 1):
            a = i * n + j + 1
            cells = (
                [(a, a + 1, a + n + 1, a + n)]
                if quads
                else [(a, a + 1, a + n + 1), (a, a + n + 1, a + n)]
            )
            for cell in cells:
                refs = [x - count - 1 if negative else x for x in cell]
                if texcoords and normals:
                    out.append("f " + " ".join(f"{r}/{r}/{r}" for r in refs))
                elif texcoords or normals:
                    out.append("f " + " ".join(f"{r}{sep}{r}" for r in refs))
                else:
                    out.append("f " + " ".join(str(r) for r in refs))
    return ("\n".join(out) + "\n").encode()


TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"
DEFAULT = ObjLimits()


def check(data: bytes, limits: ObjLimits = DEFAULT, compressed: bool | None = None) -> ObjReport:
    return check_obj(io.BytesIO(data), limits, compressed)


def reference(data: bytes, limits: ObjLimits = DEFAULT) -> ObjReport:
    return obj._check(io.BytesIO(data), limits, None, fast=False)


def trickle(data: bytes, seed: int = 0) -> BinaryIO:
    return cast(BinaryIO, Trickle(data, seed))


class Trickle(io.RawIOBase):
    """A stream that returns 1 to 7 bytes per read."""

    def __init__(self, data: bytes, seed: int = 0) -> None:
        self.data, self.pos, self.rng = data, 0, random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        step = min(self.rng.randint(1, 7), size if size >= 0 else 7)
        chunk = self.data[self.pos : self.pos + step]
        self.pos += len(chunk)
        return chunk


# -- valid meshes --------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["v", "v/vt", "v//vn", "v/vt/vn"])
@pytest.mark.parametrize("negative", [False, True])
def test_cube_passes(form: str, negative: bool) -> None:
    report = check(cube_obj(form, negative))
    assert report.ok, report.reason
    assert (report.vertices, report.texcoords, report.normals, report.faces) == (8, 4, 6, 6)


@pytest.mark.parametrize(
    "texcoords,normals", [(True, True), (True, False), (False, True), (False, False)]
)
@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("quads", [False, True])
def test_grid_passes(texcoords: bool, normals: bool, negative: bool, quads: bool) -> None:
    data = grid_obj(30, texcoords, normals, negative, quads)
    report = check(data)
    assert report.ok, report.reason
    assert report.vertices == 900
    assert report.texcoords == (900 if texcoords else 0)
    assert report.normals == (900 if normals else 0)
    assert report.faces == 29 * 29 * (1 if quads else 2)
    assert report.bytes == len(data)
    assert reference(data) == report


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(cube_obj().replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(b"\xef\xbb\xbf" + cube_obj(), id="bom"),
        pytest.param(cube_obj().replace(b"v 1 1 1\n", b"v 1 \\\n1 \\\r\n1\n"), id="continuation"),
        pytest.param(cube_obj().rstrip(b"\n"), id="no-final-newline"),
        pytest.param(cube_obj().replace(b"v 0 0 0", b"v 0 0 0 1.0"), id="w"),
        pytest.param(cube_obj().replace(b"v 0 0 0", b"v 0 0 0 0.5 0.25 1"), id="vertex-colour"),
        pytest.param(cube_obj().replace(b"vt 0 0", b"vt 0.5"), id="vt-1"),
        pytest.param(cube_obj().replace(b"vt 0 0", b"vt 0 0 0"), id="vt-3"),
        pytest.param(cube_obj().replace(b"f ", b"f\t  ").replace(b"v ", b"v\t"), id="tabs"),
        pytest.param(cube_obj() + b"l 1 2 3\nl 1/1 -1/-1\np 1 2 -3\n", id="lines-points"),
        pytest.param(cube_obj() + b"vp 0.5 0.5\ncstype bezier\nweird stuff 1 2\n", id="unknown"),
        pytest.param(cube_obj().replace(b"v 1 1 1", b"v 1 1 1 # corner"), id="trailing-comment"),
        pytest.param(b"# \xc3\xa9t\xc3\xa9 \xe2\x9c\x93\n" + cube_obj(), id="utf8-comment"),
        pytest.param(b"v 1e-3 -2.5E+2 +.5\nv 1. 0 0\nv 0 1 0\nf 1 2 3\n", id="number-syntax"),
        pytest.param(b"v 0 0 0\nf 1 1 1\n", id="degenerate-but-valid"),
    ],
)
def test_variants_pass(data: bytes) -> None:
    report = check(data)
    assert report.ok, report.reason
    assert reference(data) == report


# -- broken meshes: each rule, reason names the line ---------------------------------------


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"# nothing\n\n", "no faces"),
        (TRIANGLE, "no faces"),
        (b"v 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "line 1: vertex has 2 numbers, expected 3, 4 or 6"),
        (b"v 0 0 0 1 1\n" + TRIANGLE + b"f 1 2 3\n", "line 1: vertex has 5 numbers"),
        (TRIANGLE + b"v 0 nan 0\nf 1 2 3\n", "line 4: vertex 'nan' is not a finite number"),
        (TRIANGLE + b"v 0 -inf 0\nf 1 2 3\n", "line 4: vertex '-inf' is not a finite number"),
        (TRIANGLE + b"v 0 1e999 0\nf 1 2 3\n", "line 4: vertex '1e999' is not a finite number"),
        (TRIANGLE + b"v 0 abc 0\nf 1 2 3\n", "line 4: vertex 'abc' is not a number"),
        (TRIANGLE + b"v 0 1_0 0\nf 1 2 3\n", "line 4: vertex '1_0' is not a number"),
        (
            TRIANGLE + b"vt 0 0 0 0\nf 1 2 3\n",
            "line 4: texture coordinate has 4 numbers, expected 1 to 3",
        ),
        (TRIANGLE + b"vt\nf 1 2 3\n", "line 4: texture coordinate has 0 numbers"),
        (TRIANGLE + b"vn 0 1\nf 1 2 3\n", "line 4: normal has 2 numbers, expected 3"),
        (TRIANGLE + b"vn 0 1 nan\nf 1 2 3\n", "line 4: normal 'nan' is not a finite number"),
        (TRIANGLE + b"f 1 2 9\n", "line 4: face index 9 points past the 3 vertices defined so far"),
        (
            TRIANGLE + b"f -1 -2 -4\n",
            "line 4: face index -4 points before the first of the 3 vertices",
        ),
        (TRIANGLE + b"f 0 1 2\n", "line 4: face index 0 is invalid"),
        (TRIANGLE + b"f 1 2\n", "line 4: face has 2 vertices, at least 3 needed"),
        (TRIANGLE + b"f\n", "line 4: face has 0 vertices"),
        (TRIANGLE + b"f 1 2 x\n", "line 4: face index 'x' is not an integer"),
        (TRIANGLE + b"f 1 2 3.0\n", "line 4: face index '3.0' is not an integer"),
        (
            TRIANGLE + b"vt 0 0\nf 1/1 2/1 3/2\n",
            "line 5: face texture coordinate index 2 points past the 1",
        ),
        (
            TRIANGLE + b"vt 0 0\nf 1/1 2/1 3/-2\n",
            "line 5: face texture coordinate index -2 points before",
        ),
        (
            TRIANGLE + b"f 1/1 2/1 3/1\n",
            "line 4: face texture coordinate index 1 points past the 0",
        ),
        (TRIANGLE + b"vn 0 0 1\nf 1//1 2//1 3//0\n", "line 5: face normal index 0 is invalid"),
        (
            TRIANGLE + b"vn 0 0 1\nf 1//1 2//1 3//2\n",
            "line 5: face normal index 2 points past the 1 normal defined",
        ),
        (TRIANGLE + b"f 1/ 2 3\n", "line 4: face vertex '1/' is malformed"),
        (TRIANGLE + b"f 1 /2 3\n", "line 4: face vertex '/2' is malformed"),
        (TRIANGLE + b"f 1/1/1/1 2 3\n", "line 4: face vertex '1/1/1/1' is malformed"),
        (b"f 1 2 3\n" + TRIANGLE, "line 1: face index 1 points past the 0 vertices defined so far"),
        (TRIANGLE + b"f 1 2 3\nl 1\n", "line 5: polyline has 1 vertex, at least 2 needed"),
        (TRIANGLE + b"f 1 2 3\nl 1 4\n", "line 5: polyline index 4 points past"),
        (TRIANGLE + b"f 1 2 3\nl 1//1 2\n", "line 5: polyline vertex '1//1' is malformed"),
        (TRIANGLE + b"f 1 2 3\np 0\n", "line 5: point index 0 is invalid"),
        (TRIANGLE + b"f 1 2 3\n\x00\x01\x02junk\n", "line 5: binary data (byte 0x00)"),
        (TRIANGLE + b"f 1 2 3\nv 1 2 3\x1b[0m\n", "line 5: binary data (byte 0x1b)"),
        (TRIANGLE + b"g caf\xe9\nf 1 2 3\n", "line 4: not valid UTF-8 (byte 0xe9)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 1: not valid UTF-8 (byte 0x89)"),
    ],
)
def test_broken_mesh_fails(data: bytes, reason: str) -> None:
    report = check(data)
    assert not report.ok
    assert report.reason is not None and report.reason.startswith(reason), report.reason
    assert reference(data) == report


def test_reason_example_from_issue() -> None:
    data = cube_obj("v").replace(b"f 1 3 7 5", b"f 1 3 9 5")
    lineno = data.split(b"\n").index(b"f 1 3 9 5") + 1
    assert (
        check(data).reason
        == f"line {lineno}: face index 9 points past the 8 vertices defined so far"
    )


def test_error_in_a_long_run_names_its_line() -> None:
    data = grid_obj(40)
    lines = data.split(b"\n")
    target = len(lines) - 100
    lines[target] = b"f 1/1/1 99999/2/2 3/3/3"
    report = check(b"\n".join(lines))
    assert report.reason is not None and report.reason.startswith(
        f"line {target + 1}: face index 99999"
    )


def test_vertex_limit() -> None:
    data = grid_obj(10)
    report = check(data, ObjLimits(max_vertices=99))
    assert not report.ok and report.reason == "line 102: more than 99 vertices"
    assert check(data, ObjLimits(max_vertices=100)).ok


def test_face_limit() -> None:
    data = grid_obj(10, texcoords=False, normals=False)
    first_face = data.split(b"\n").index(b"f 1 2 12") + 1
    report = check(data, ObjLimits(max_faces=50))
    assert report.reason == f"line {first_face + 50}: more than 50 faces"
    assert check(data, ObjLimits(max_faces=162)).ok


def test_line_length_limit() -> None:
    limits = ObjLimits(max_line_bytes=100)
    assert check(cube_obj() + b"#" * 100 + b"\n", limits).ok
    report = check(TRIANGLE + b"g " + b"x" * 200 + b"\nf 1 2 3\n", limits)
    assert report.reason == "line 4: longer than 100 bytes"
    report = check(TRIANGLE + b"f 1 2 3\n" + b"#" * 10_000, limits)  # no newline, never ends
    assert report.reason == "line 5: longer than 100 bytes"


def test_plain_size_limit() -> None:
    report = check(grid_obj(20), ObjLimits(max_uncompressed_bytes=1000))
    assert report.reason == "file larger than 1000 bytes"


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_binary_junk_never_raises(data: bytes) -> None:
    report = check(data)
    assert isinstance(report, ObjReport)
    assert report == reference(data)


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_gzipped_junk_never_raises(data: bytes) -> None:
    packed = gzip.compress(data)
    assert check(packed) == check(data, compressed=False)
    for cut in (1, len(packed) // 2, len(packed) - 1):
        report = check(packed[:cut])
        assert report.reason == "truncated gzip" or not report.ok


# -- gzip ----------------------------------------------------------------------------------


def test_gzip_of_valid_mesh_passes() -> None:
    data = grid_obj(30)
    report = check(gzip.compress(data))
    assert report.ok and report.faces == 2 * 29 * 29 and report.bytes == len(data)
    assert check(gzip.compress(data), compressed=True).ok


def test_gzip_multiple_members_and_zero_padding() -> None:
    data = cube_obj()
    half = len(data) // 2
    assert check(gzip.compress(data[:half]) + gzip.compress(data[half:]) + b"\0" * 8).ok


def test_truncated_gzip() -> None:
    packed = gzip.compress(grid_obj(30))
    for cut in (2, 10, len(packed) // 2, len(packed) - 4):
        assert check(packed[:cut]).reason == "truncated gzip"


def test_corrupt_gzip_and_forced_modes() -> None:
    packed = bytearray(gzip.compress(grid_obj(10)))
    packed[40] ^= 0xFF
    report = check(bytes(packed))
    assert not report.ok and report.reason is not None
    assert check(cube_obj(), compressed=True).reason.startswith("corrupt gzip data")  # type: ignore[union-attr]
    assert (
        check(gzip.compress(cube_obj()), compressed=False).reason
        == "line 1: binary data (byte 0x1f)"
    )
    assert check(gzip.compress(cube_obj()) + b"junk").reason.startswith("corrupt gzip data")  # type: ignore[union-attr]


def test_gzip_bomb_is_stopped_by_the_size_limit() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = bomb.compress(b"v 0 0 0\n" * 4_000_000) + bomb.flush()  # 32 MB in ~100 kB
    assert len(packed) < 200_000
    report = check(packed, ObjLimits(max_uncompressed_bytes=2_000_000))
    assert report.reason == "uncompressed data larger than 2000000 bytes"
    assert report.bytes <= 2_000_000 + obj._CHUNK
    zeros = gzip.compress(b"\0" * 20_000_000)
    assert check(zeros).reason == "line 1: binary data (byte 0x00)"


# -- chunk boundaries ----------------------------------------------------------------------

BOUNDARY_CASES = [
    grid_obj(12),
    grid_obj(8, negative=True, quads=True),
    cube_obj().replace(b"\n", b"\r\n"),
    cube_obj().replace(b"v 1 1 1\n", b"v 1 \\\n1 \\\r\n1\n"),
    b"\xef\xbb\xbf# \xc3\xa9\n" + cube_obj("v//vn"),
    grid_obj(8).replace(b"f 70/70/70", b"f 70/70/99"),
    cube_obj() + b"\x00",
]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("case", range(len(BOUNDARY_CASES)))
def test_chunk_boundaries(monkeypatch: pytest.MonkeyPatch, chunk: int, case: int) -> None:
    data = BOUNDARY_CASES[case]
    expected = check(data)
    monkeypatch.setattr(obj, "_CHUNK", chunk)
    assert check_obj(trickle(data, seed=chunk)) == expected
    assert check_obj(trickle(gzip.compress(data), seed=chunk)) == expected


def test_trickle_stream_with_default_chunk() -> None:
    data = grid_obj(20)
    expected = check(data)
    assert expected.ok
    assert check_obj(trickle(data)) == expected


# -- properties ----------------------------------------------------------------------------


@st.composite
def numbers(draw: st.DrawFn) -> str:
    value = draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    return draw(st.sampled_from(["{:.6f}", "{:g}", "{:e}", "{!r}", "{:.0f}"])).format(value)


@st.composite
def meshes(draw: st.DrawFn) -> tuple[bytes, tuple[int, int, int, int]]:
    """A valid mesh with runs of each statement, random spacing and index forms."""
    counts = [0, 0, 0]
    faces = 0
    lines: list[str] = []
    sep = draw(st.sampled_from([" ", " ", "  ", "\t"]))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["v", "vt", "vn", "f", "f", "l", "p", "other"]))
        for _ in range(draw(st.integers(1, 12))):
            if kind in ("v", "vt", "vn"):
                arity = draw(
                    st.sampled_from({"v": [3, 3, 4, 6], "vt": [1, 2, 2, 3], "vn": [3]}[kind])
                )
                lines.append(sep.join([kind] + [draw(numbers()) for _ in range(arity)]))
                counts[("v", "vt", "vn").index(kind)] += 1
            elif kind == "other":
                lines.append(
                    draw(st.sampled_from(["# c", "", "g a b", "s 1", "usemtl m", "o x", "vp 1 2"]))
                )
            elif counts[0]:
                lines.append(draw(element(kind, counts, sep)))
                faces += kind == "f"
    if not faces:
        if not counts[0]:
            lines.append("v 0 0 0")
            counts[0] = 1
        lines.append("f 1 -1 1")
        faces = 1
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    trailing = draw(st.sampled_from(["", " "]))
    text = "".join(line + trailing + ending for line in lines)
    return text.encode(), (counts[0], counts[1], counts[2], faces)


@st.composite
def element(draw: st.DrawFn, kind: str, counts: list[int], sep: str) -> str:
    size = draw(st.integers({"f": 3, "l": 2, "p": 1}[kind], 6))
    forms = {"f": ["v", "v/vt", "v//vn", "v/vt/vn"], "l": ["v", "v/vt"], "p": ["v"]}[kind]
    forms = [f for f in forms if ("vt" not in f or counts[1]) and ("vn" not in f or counts[2])]
    form = draw(st.sampled_from(forms))

    def index(role: int) -> str:
        i = draw(st.integers(1, counts[role]))
        return str(i - counts[role] - 1 if draw(st.booleans()) else i)

    refs = []
    for _ in range(size):
        v = index(0)
        vt = index(1) if "vt" in form else ""
        vn = index(2) if "vn" in form else ""
        refs.append(
            {"v": v, "v/vt": f"{v}/{vt}", "v//vn": f"{v}//{vn}", "v/vt/vn": f"{v}/{vt}/{vn}"}[form]
        )
    return sep.join([kind] + refs)


@given(meshes())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_meshes_pass(mesh: tuple[bytes, tuple[int, int, int, int]]) -> None:
    data, (v, vt, vn, f) = mesh
    report = check(data)
    assert report.ok, (report.reason, data)
    assert (report.vertices, report.texcoords, report.normals, report.faces) == (v, vt, vn, f)
    assert reference(data) == report


MUTATION_BYTES = b" \t\n/-+.0123456789eEfvtn#\\x"


@given(
    meshes(),
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(MUTATION_BYTES),
            st.sampled_from(["replace", "insert", "delete"]),
        ),
        max_size=4,
    ),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fast_path_agrees_with_reference(
    mesh: tuple[bytes, tuple[int, int, int, int]], edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(mesh[0])
    for pos, byte, op in edits:
        pos %= len(data) + 1
        if op == "insert":
            data[pos:pos] = bytes([byte])
        elif pos < len(data):
            data[pos : pos + 1] = b"" if op == "delete" else bytes([byte])
    assert check(bytes(data)) == reference(bytes(data))
