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
import datetime as dt
import os
import re
import sqlite3
import statistics
import subprocess
import time
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
          f"CPU {1e6 * result['cpu'] / max(1, result['total']):.0f} us/upload "
          f"({result['cpu'] / args.seconds:.2f} cores)  durable {accepted} x 202, "
          f"{result['stored']} rows ({'ok' if ok else 'MISMATCH'})",
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
    pairs = [m / o for o, m in zip(rates[1], rates[args.workers])]
    one = statistics.median(rates[1])
    many = statistics.median(rates[args.workers])
    print(f"pairs     {args.workers} : 1 in each round: "
          + ", ".join(f"{ratio:.2f}" for ratio in pairs)
          + f"; median of the pairs {statistics.median(pairs):.2f}x (target >= 1.6x for 2)")
    print(f"median    1 process {one:.0f}/s, {args.workers} processes {many:.0f}/s; against the "
          f"bare handler {one / base['rps']:.2f} / {many / base['rps']:.2f}")


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
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --workers or --compare-one-process")
    parser.add_argument("--compare-env", metavar="NAME=VALUE",
                        help="also run the role with this variable set, alternating")
    parser.add_argument("--compare-one-process", action="store_true",
                        help="role all: also python app.py --one-process, alternating")
    args = parser.parse_args()
    if args.workers > 1:
        compare_workers(args)
        return
    banner(f"small uploads: {args.size} B multipart, {args.connections} connections, "
           f"{args.seconds}s, wrk -t{args.threads}, embedded defaults, role {args.role}")
    workdir = temp_workdir("small")
    lua = write_lua(workdir, args.size)
    configs: list[tuple[list[str], dict[str, str]]] = [([args.role], {})]
    if args.role == "all" and args.compare_one_process:
        configs.append((["all", "--one-process"], {}))
    if args.compare_env:
        name, _, value = args.compare_env.partition("=")
        configs.append(([args.role], {name: value}))
    results = []
    cpu_per_upload: dict[str, list[float]] = {}
    try:
        for number in range(args.rounds if len(configs) > 1 else 1):
            baseline = start_baseline(workdir / f"baseline-{number}")
            try:
                base = run_wrk(baseline.base + "/noop", lua, args.connections, args.seconds,
                               args.threads)
            finally:
                baseline.stop()
            print(f"baseline  {base['rps']:7.0f} req/s     p50 {base['p50']:.1f} ms  "
                  f"p99 {base['p99']:.1f} ms", flush=True)
            for index, (role, env) in enumerate(configs if number % 2 == 0 else configs[::-1]):
                result = run_single(workdir / f"gw-{number}-{index}", lua, args, role, env)
                label = " ".join([*role, *(f"{k}={v}" for k, v in env.items())])
                results.append((label, result["rps"] / base["rps"]))
                cpu_per_upload.setdefault(label, []).append(result["cpu_per_upload"])
                print(f"ratio     {result['rps'] / base['rps']:.3f} of the bare handler "
                      f"(target: gateway >= 0.20, all >= 0.13)", flush=True)
    finally:
        remove_workdir(workdir)
    for name in dict(results):
        ratios = [r for n, r in results if n == name]
        print(f"median ratio {name}: {statistics.median(ratios):.3f} ({len(ratios)} runs), "
              f"CPU per upload {statistics.median(cpu_per_upload[name]):.0f} us")


def availability(workdir: Path, since: dt.datetime, wait: float = 15.0) -> dict[str, float]:
    """For the uploads created since ``since``: how long after its record each became
    ``available`` (waiting up to ``wait`` s for the last ones)."""
    query = ("SELECT u.created_at, e.at FROM uploads u LEFT JOIN upload_events e ON "
             "e.request_id = u.request_id AND e.status = 'available' WHERE u.created_at >= ?")
    deadline = time.monotonic() + wait
    while True:
        with sqlite3.connect(workdir / "gateway.sqlite") as conn:
            rows = conn.execute(query, (since.strftime("%Y-%m-%d %H:%M:%S.%f"),)).fetchall()
        if all(at for _, at in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    delays = sorted((dt.datetime.fromisoformat(at) - dt.datetime.fromisoformat(created))
                    .total_seconds() for created, at in rows if at)
    if not delays:
        return {"n": len(rows), "available": 0}
    return {"n": len(rows), "available": len(delays),
            "p50": delays[len(delays) // 2], "p99": delays[int(len(delays) * 0.99)],
            "max": delays[-1], "over5": sum(1 for d in delays if d > 5.0)}


def children(server: Server) -> dict[str, int]:
    """A supervisor's children by name (from its log), latest pid each."""
    found = re.findall(r"supervisor started (\S+) \(pid (\d+)\)",
                       server.log.read_text(errors="replace"))
    return {name: int(pid) for name, pid in found}


def run_single(workdir: Path, lua: Path, args: argparse.Namespace, role: list[str],
               env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    gateway = start_gateway(workdir, env, role=role)
    try:
        run_wrk(gateway.base + "/api/v1/upload", lua, args.connections, 2, args.threads)  # warm-up
        time.sleep(2)  # let the warm-up's uploads through before the measured run
        before = count_uploads(gateway.workdir)
        since = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        cpu, sys_cpu = cpu_seconds(gateway.pid), cpu_seconds(gateway.pid, "system")
        parts = children(gateway)
        part_cpu = {name: cpu_seconds(pid) for name, pid in parts.items()}
        gw = run_wrk(gateway.base + "/api/v1/upload", lua, args.connections, args.seconds,
                     args.threads)
        part_cpu = {name: cpu_seconds(pid) - part_cpu[name] for name, pid in parts.items()}
        cpu = cpu_seconds(gateway.pid) - cpu
        sys_cpu = cpu_seconds(gateway.pid, "system") - sys_cpu
        accepted = gw["total"] - gw["non2xx"]
        stored = count_uploads(gateway.workdir) - before
        avail = availability(gateway.workdir, since) if role[0] == "all" else None
    finally:
        gateway.stop()
    gw["cpu_per_upload"] = 1e6 * cpu / max(1, gw["total"])
    label = " ".join([*role, *(f"{k}={v}" for k, v in env.items())])
    print(f"{label:<17} {gw['rps']:7.0f} uploads/s  p50 {gw['p50']:.1f} ms  "
          f"p99 {gw['p99']:.1f} ms")
    print(f"  durable   {accepted} answered 202, {stored} rows committed "
          f"({'ok' if stored >= accepted and not gw['non2xx'] else 'MISMATCH'}); "
          f"non-2xx {gw['non2xx']}; socket errors: {gw['socket_errors'] or 'none'}")
    print(f"  CPU {1e6 * cpu / max(1, gw['total']):.0f} us per upload (all processes), "
          f"{1e6 * sys_cpu / max(1, gw['total']):.0f} us of it in the kernel "
          f"({cpu / args.seconds:.2f} cores)")
    if part_cpu:
        print("  CPU per upload by process: " + ", ".join(
            f"{name} {1e6 * seconds / max(1, gw['total']):.0f} us"
            for name, seconds in part_cpu.items()))
    if avail is not None:
        if avail["available"]:
            print(f"  available {avail['available']} of {avail['n']} uploads; record -> "
                  f"available p50 {1000 * avail['p50']:.0f} ms, p99 {1000 * avail['p99']:.0f} ms, "
                  f"max {1000 * avail['max']:.0f} ms; {avail['over5']:.0f} over 5 s")
        else:
            print(f"  available 0 of {avail['n']} uploads")
    return gw


if __name__ == "__main__":
    main()
