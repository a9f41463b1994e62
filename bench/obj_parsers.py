"""Compare OBJ parsers: our streaming ``validators.obj.check_obj`` against tinyobjloader,
trimesh and a naive line-by-line Python loop.

    pip install -r bench/requirements.txt   # or: pip install --pre tinyobjloader trimesh pillow
    python bench/obj_parsers.py [--mb 100] [--skip trimesh]

It writes a grid mesh with ``vt`` and ``vn`` (about ``--mb`` MB) into a temporary
directory, then times each parser in a fresh subprocess so that each one's peak RSS growth
(``ru_maxrss`` after the parse minus before it, imports excluded) is its own. Then it
feeds a few broken meshes to each parser and prints which ones it notices: the reason
we do not use a library parser as the check.

A plain ``pip install tinyobjloader trimesh`` picks tinyobjloader 0.1, the only stable
release, which does not build (missing pybind11 headers); the 2.0 release candidates ship
wheels, hence ``--pre``. trimesh needs Pillow for meshes with texture coordinates. A
parser that is not installed is reported as such, not fatal. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARSERS = ("check_obj", "tinyobjloader", "trimesh", "naive")
INSTALL = {"tinyobjloader": "pip install --pre tinyobjloader", "trimesh": "pip install trimesh"}


def write_grid(path: Path, target_mb: float) -> int:
    """A grid mesh of about ``target_mb`` MB: v, vt, vn per vertex, two triangles per cell."""
    n = max(2, int(math.sqrt(target_mb * 1e6 / 208)))  # ~208 bytes per grid vertex
    with open(path, "wb") as out:
        out.write(b"# grid %dx%d\no grid\n" % (n, n))
        for kind in (b"v", b"vt", b"vn"):
            for i in range(n):
                if kind == b"v":
                    rows = [
                        b"v %.6f %.6f %.6f\n" % (j / n, i / n, (i * j) % 7 / 7) for j in range(n)
                    ]
                elif kind == b"vt":
                    rows = [b"vt %.6f %.6f\n" % (j / n, i / n) for j in range(n)]
                else:
                    rows = [b"vn 0.000000 0.000000 1.000000\n"] * n
                out.write(b"".join(rows))
        out.write(b"g surface\nusemtl none\ns 1\n")
        for i in range(n - 1):
            rows = []
            for j in range(n - 1):
                a = i * n + j + 1
                for x, y, z in ((a, a + 1, a + n + 1), (a, a + n + 1, a + n)):
                    rows.append(b"f %d/%d/%d %d/%d/%d %d/%d/%d\n" % (x, x, x, y, y, y, z, z, z))
            out.write(b"".join(rows))
    return path.stat().st_size


# -- the parsers, each run in its own process ----------------------------------------------


def parse_check_obj(path: str) -> str:
    from validators.obj import check_obj

    with open(path, "rb") as stream:
        report = check_obj(stream)
    return f"ok={report.ok} v={report.vertices} f={report.faces}"


def parse_tinyobjloader(path: str) -> str:
    import tinyobjloader

    reader, config = tinyobjloader.ObjReader(), tinyobjloader.ObjReaderConfig()
    config.triangulate = False
    ok = reader.ParseFromFile(path, config)
    faces = sum(len(shape.mesh.num_face_vertices) for shape in reader.GetShapes())
    return f"ok={ok} v={len(reader.GetAttrib().vertices) // 3} f={faces}"


def parse_trimesh(path: str) -> str:
    import trimesh

    mesh: Any = trimesh.load(path, force="mesh", process=False)
    return f"v={len(mesh.vertices)} f={len(mesh.faces)}"


def parse_naive(path: str) -> str:
    """The obvious per-line loop doing the same checks as check_obj (no limits, no gzip)."""
    counts = {b"v": 0, b"vt": 0, b"vn": 0}
    faces = 0
    with open(path, "rb") as stream:
        for lineno, line in enumerate(stream, 1):
            tokens = line.split()
            if not tokens or tokens[0] == b"#":
                continue
            if tokens[0] in counts:
                if not all(math.isfinite(float(t)) for t in tokens[1:]):
                    raise ValueError(f"line {lineno}: not finite")
                counts[tokens[0]] += 1
            elif tokens[0] == b"f":
                for ref in tokens[1:]:
                    for part, kind in zip(ref.split(b"/"), (b"v", b"vt", b"vn")):
                        if part and not 0 < abs(int(part)) <= counts[kind]:
                            raise ValueError(f"line {lineno}: bad index {part!r}")
                faces += 1
    return f"v={counts[b'v']} f={faces}"


def child(name: str, path: str) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        parse = globals()[f"parse_{name}"]
        if name in INSTALL:
            __import__(name)  # import cost is not the parser's
        if name == "check_obj":
            import validators.obj  # noqa: F401
    except ImportError as exc:
        print(json.dumps({"error": f"not installed ({exc}); {INSTALL.get(name, '')}"}))
        return
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        result = parse(path)
    except Exception as exc:  # noqa: BLE001 - report, do not crash the table
        result = f"raised {type(exc).__name__}: {exc}"[:80]
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"seconds": seconds, "rss_mb": grown / 1024, "result": result}))


def run_child(name: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- broken meshes: who notices? -----------------------------------------------------------

TRI = b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"
BROKEN = {
    "index past the end (line 4 of 5)": TRI + b"f 1 2 9\nf 1 2 3\n",
    "index 0": TRI + b"f 0 1 2\n",
    "vertex defined later": b"f 1 2 3\n" + TRI,
    "nan coordinate": TRI + b"v nan 0 0\nf 1 2 3\n",
    "'abc' coordinate": b"v abc 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "2 coordinates": b"v 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "2-vertex face": TRI + b"f 1 2\n",
    "bad texture index (line 5 of 6)": TRI + b"vt 0 0\nf 1/5 2/1 3/1\n# end\n",
    "empty file": b"",
    "binary junk": b"\x00\x01\x02garbage\xff\n",
}


def verdict_check_obj(data: bytes) -> str:
    from validators.obj import check_obj

    report = check_obj(io.BytesIO(data))
    return "ok" if report.ok else f"REJECT: {report.reason}"


def verdict_tinyobjloader(data: bytes) -> str:
    import tinyobjloader

    reader, config = tinyobjloader.ObjReader(), tinyobjloader.ObjReaderConfig()
    config.triangulate = False
    ok = reader.ParseFromString(data.decode("latin-1"), "", config)
    text = (reader.Error() or reader.Warning()).strip().replace("\n", " ")
    return ("ok" if ok else "REJECT") + (f" ({text[:60]})" if text else "")


def verdict_trimesh(data: bytes) -> str:
    import trimesh

    try:
        mesh: Any = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001
        return f"REJECT: {type(exc).__name__}"
    return f"ok (v={len(mesh.vertices)} f={len(mesh.faces)})"


def print_verdicts() -> None:
    logging.disable(logging.CRITICAL)
    sys.path.insert(0, str(ROOT))
    print("\nBroken meshes: what each parser says")
    for label, data in BROKEN.items():
        print(f"  {label}")
        for name in ("check_obj", "tinyobjloader", "trimesh"):
            try:
                said = globals()[f"verdict_{name}"](data)
            except ImportError:
                said = "not installed"
            print(f"    {name:14} {said[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="mesh size in MB")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARSERS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.obj"
        size = write_grid(path, args.mb)
        mb = size / 1e6
        print(
            f"{path.name}: {mb:.1f} MB grid mesh with vt and vn; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs\n"
        )
        results = {name: run_child(name, path) for name in PARSERS if name not in args.skip}
    ours: float | None = results.get("check_obj", {}).get("seconds")
    print(f"{'parser':14} {'seconds':>8} {'MB/s':>7} {'time/ours':>9} {'peak RSS +MB':>12}  result")
    for name, res in results.items():
        if "error" in res:
            print(f"{name:14} {res['error']}")
            continue
        sec = float(res["seconds"])
        ratio = f"{sec / ours:.2f}x" if ours else "-"
        print(
            f"{name:14} {sec:8.2f} {mb / sec:7.1f} {ratio:>9} {res['rss_mb']:12.0f}  {res['result']}"
        )
    print_verdicts()


if __name__ == "__main__":
    main()
