"""Target 3: 10 KB multipart uploads, 16 concurrent connections (wrk with a Lua body), on
embedded defaults (localdisk, SQLite, embedded bus, the test validator running in the same
process), against the bare Tornado baseline answering the same request with the same 202
JSON without parsing or storing it.

    python bench/small_uploads.py [--size 10000] [--connections 16] [--seconds 15]
    python bench/small_uploads.py --role gateway --workers 2 --database postgres [--rounds 2]

With ``--workers N`` (N > 1) the same gateway runs with one process and with N processes
(``python app.py gateway --workers N``), alternating for ``--rounds`` rounds, and the ratio
N : 1 is printed (issue 14 target 3). ``--database postgres`` puts each gateway on its own
fresh database on the PostgreSQL server at 127.0.0.1:5432 (``BENCH_PG_ADMIN_URL``).

After the run, every 202 must be durable: the number of upload rows in the gateway's
database (committed before each 202) must be at least the number of 202s wrk counted.
Needs wrk (``apt-get install -y wrk``).
"""
from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import uuid
from pathlib import Path

from common import (
    Server,
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


PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pg_database() -> tuple[str, object]:
    """A fresh database: (its URL for DATABASE_URL, a callable that drops it)."""
    from sqlalchemy import create_engine, text
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return f"{base}/{name}", drop


def count_uploads(workdir: Path, url: str | None = None) -> int:
    if url:
        from sqlalchemy import create_engine, text
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM uploads")).scalar_one())
        finally:
            engine.dispose()
    with sqlite3.connect(workdir / "gateway.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM uploads").fetchone()[0])


def run_gateway(workdir: Path, lua: Path, args: argparse.Namespace, workers: int,
                database: str) -> dict:  # type: ignore[type-arg]
    env: dict[str, str] = {}
    drop = None
    url = None
    if database == "postgres":
        url, drop = pg_database()
        env["DATABASE_URL"] = url
    role = [args.role] + (["--workers", str(workers)] if workers > 1 else [])
    gateway: Server = start_gateway(workdir, env, role=role)
    try:
        run_wrk(gateway.base + "/api/v1/upload", lua, args.connections, 2, args.threads)  # warm-up
        before = count_uploads(gateway.workdir, url)
        cpu = cpu_seconds(gateway.pid)
        result = run_wrk(gateway.base + "/api/v1/upload", lua, args.connections, args.seconds,
                         args.threads)
        result["cpu"] = cpu_seconds(gateway.pid) - cpu
        result["stored"] = count_uploads(gateway.workdir, url) - before
    finally:
        gateway.stop()
        if drop is not None:
            drop()  # type: ignore[operator]
    accepted = result["total"] - result["non2xx"]
    ok = result["stored"] >= accepted and not result["non2xx"]
    print(f"  {workers} process{'es' if workers > 1 else '  '} {result['rps']:7.0f} uploads/s  "
          f"p50 {result['p50']:.1f} ms  p99 {result['p99']:.1f} ms  "
          f"CPU {1e6 * result['cpu'] / max(1, result['total']):.0f} us/upload  "
          f"durable {accepted} x 202, {result['stored']} rows ({'ok' if ok else 'MISMATCH'})",
          flush=True)
    return result


def compare_workers(args: argparse.Namespace) -> None:
    banner(f"small uploads: {args.size} B multipart, {args.connections} connections, "
           f"{args.seconds}s, wrk -t{args.threads}, role {args.role}, database {args.database}: "
           f"1 process against {args.workers}, {args.rounds} rounds")
    workdir = temp_workdir("workers")
    lua = write_lua(workdir, args.size)
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    baseline = start_baseline(workdir / "baseline")
    try:
        base = run_wrk(baseline.base + "/noop", lua, args.connections, args.seconds, args.threads)
        print(f"  bare handler {base['rps']:7.0f} req/s", flush=True)
    finally:
        baseline.stop()
    try:
        for number in range(args.rounds):
            order = [1, args.workers] if number % 2 == 0 else [args.workers, 1]
            for workers in order:
                result = run_gateway(workdir / f"gw-{number}-{workers}", lua, args, workers,
                                     args.database)
                rates[workers].append(result["rps"])
    finally:
        remove_workdir(workdir)
    one = statistics.median(rates[1])
    many = statistics.median(rates[args.workers])
    print(f"median    1 process {one:.0f}/s, {args.workers} processes {many:.0f}/s: "
          f"{many / one:.2f}x (target >= 1.6x for 2); against the bare handler "
          f"{one / base['rps']:.2f} / {many / base['rps']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--role", default="all", choices=["all", "gateway"],
                        help="all: the test validator runs in the gateway process too")
    parser.add_argument("--workers", type=int, default=1,
                        help="N > 1: compare python app.py gateway --workers N with 1 process")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=2, help="with --workers")
    args = parser.parse_args()
    if args.workers > 1:
        compare_workers(args)
        return
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
