"""Target 3: 10 KB multipart uploads, 16 concurrent connections (wrk with a Lua body), on
embedded defaults (localdisk, SQLite, embedded bus, the test validator running in the same
process), against the bare Tornado baseline answering the same request with the same 202
JSON without parsing or storing it.

    python bench/small_uploads.py [--size 10000] [--connections 16] [--seconds 15]

After the run, every 202 must be durable: the number of upload rows in the gateway's
database (committed before each 202) must be at least the number of 202s wrk counted.
Needs wrk (``apt-get install -y wrk``).
"""
from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
from pathlib import Path

from common import (
    banner,
    cpu_seconds,
    remove_workdir,
    small_body,
    start_baseline,
    start_gateway,
    temp_workdir,
)

LUA = """
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "{ctype}"
"""


def write_lua(workdir: Path, size: int) -> Path:
    body, ctype = small_body(size)
    (workdir / "body.bin").write_bytes(body)
    lua = workdir / "post.lua"
    lua.write_text(LUA.format(body=workdir / "body.bin", ctype=ctype))
    return lua


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, lua: Path, connections: int, seconds: int, threads: int = 1) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "--timeout", "10s", "-s", str(lua), url],
        check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v, u) for p, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", out)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "total": total, "p50": lat.get("50"), "p99": lat.get("99"),
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "",
            "summary": out}


def count_uploads(workdir: Path) -> int:
    with sqlite3.connect(workdir / "gateway.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM uploads").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--role", default="all", choices=["all", "gateway"],
                        help="all: the test validator runs in the gateway process too")
    args = parser.parse_args()
    banner(f"small uploads: {args.size} B multipart, {args.connections} connections, "
           f"{args.seconds}s, wrk -t{args.threads}, embedded defaults, role {args.role}")
    workdir = temp_workdir("small")
    lua = write_lua(workdir, args.size)
    baseline = start_baseline(workdir / "baseline")
    gateway = start_gateway(workdir / "gateway", role=[args.role])
    try:
        base = run_wrk(baseline.base + "/noop", lua, args.connections, args.seconds, args.threads)
        run_wrk(gateway.base + "/api/v1/upload", lua, args.connections, 2, args.threads)  # warm-up
        before = count_uploads(gateway.workdir)
        cpu, sys_cpu = cpu_seconds(gateway.pid), cpu_seconds(gateway.pid, "system")
        gw = run_wrk(gateway.base + "/api/v1/upload", lua, args.connections, args.seconds,
                     args.threads)
        cpu = cpu_seconds(gateway.pid) - cpu
        sys_cpu = cpu_seconds(gateway.pid, "system") - sys_cpu
        accepted = gw["total"] - gw["non2xx"]
        stored = count_uploads(gateway.workdir) - before
        print(f"gateway   {gw['rps']:7.0f} uploads/s  p50 {gw['p50']:.1f} ms  p99 {gw['p99']:.1f} ms"
              f"  (target >= 1300/s)")
        print(f"baseline  {base['rps']:7.0f} req/s     p50 {base['p50']:.1f} ms  p99 {base['p99']:.1f} ms")
        print(f"ratio     {gw['rps'] / base['rps']:.2f}")
        print(f"durable   {accepted} answered 202, {stored} rows committed "
              f"({'ok' if stored >= accepted and not gw['non2xx'] else 'MISMATCH'}); "
              f"non-2xx {gw['non2xx']}; socket errors: {gw['socket_errors'] or 'none'}")
        print(f"gateway CPU {1e6 * cpu / max(1, gw['total']):.0f} us per upload, "
              f"{1e6 * sys_cpu / max(1, gw['total']):.0f} us of it in the kernel "
              f"({cpu / args.seconds:.2f} cores)")
    finally:
        gateway.stop()
        baseline.stop()
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
