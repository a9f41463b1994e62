"""Pull throughput from a loopback SFTP server, beside a bare asyncssh client loop fetching
the same files in the same run.

    python bench/pull.py [--count 1000] [--size 102400] [--large 1073741824] [--rounds 1]
                         [--concurrency N]

- Server: asyncssh's SFTP server (tests/pull/sftpserver.py) in a process of its own,
  serving ``small/`` (``--count`` files of ``--size`` random bytes) and ``large/`` (one
  file of ``--large`` bytes).
- Baseline: a process running the least a script would do: one connection, then
  ``await sftp.get(remote, local)`` for each file in turn (asyncssh's parallel block
  reads), into a local directory, no fsync, no hashing, no database; timed from the
  connection to the last file.
- Puller: ``python app.py puller`` on embedded defaults (localdisk, SQLite, the embedded
  bus; provider concurrency 4), a job posted through its API; the clock runs from the
  POST until the jobs list (``GET /api/v1/pulls/jobs?provider=&limit=1``, polled every
  50 ms) shows it ``completed``: every file downloaded (resumable, checkpointed),
  hashed, stored durably in quarantine and recorded with its announcement in the outbox.

Prints MB/s for each and the ratio puller / baseline per set (target >= 0.7), and the CPU
seconds each client process used while timed (the puller's from ``/proc``, from the POST
to the job's end; the SFTP server's own CPU is in neither). Run it on a quiet machine;
the ratio holds better than the absolute figures on a busy one, and the CPU seconds
better than either.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import ROOT, GiB, banner, free_port, remove_workdir, temp_workdir

PASSWORD = "bench-password"


def make_files(root: Path, count: int, size: int, large: int) -> None:
    small = root / "small"
    small.mkdir(parents=True)
    for i in range(count):
        (small / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    (root / "large").mkdir()
    block = os.urandom(1024 * 1024)
    with open(root / "large" / "big.bin", "wb") as out:
        written = 0
        while written < large:
            chunk = block[: large - written]
            out.write(chunk)
            written += len(chunk)


# the SFTP server process -----------------------------------------------------------------

def serve(root: Path) -> None:
    from tests.pull.sftpserver import SFTPTestServer

    server = SFTPTestServer(root, user="bench", password=PASSWORD).start()
    print(json.dumps({"port": server.port, "host_key": server.host_key_line}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


def start_server(root: Path) -> tuple[subprocess.Popen[str], int, str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(root)], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    found = json.loads(process.stdout.readline())
    return process, int(found["port"]), str(found["host_key"])


# the baseline client process -------------------------------------------------------------

async def bare_loop(port: int, host_key: str, directory: str, target: Path) -> None:
    import asyncssh

    started = time.monotonic()  # after the imports: the puller is timed once it is up
    cpu_started = time.process_time()
    known = ([asyncssh.import_public_key(host_key)], [], [])
    async with asyncssh.connect("127.0.0.1", port, username="bench", password=PASSWORD,
                                known_hosts=known, config=None, agent_path=None,
                                client_keys=None) as conn:
        async with conn.start_sftp_client() as sftp:
            for name in sorted(await sftp.listdir(directory)):
                if name not in (".", ".."):
                    await sftp.get(f"{directory}/{name}", str(target / name))
    print(time.monotonic() - started, time.process_time() - cpu_started)


def baseline(port: int, host_key: str, directory: str, target: Path) -> tuple[float, float]:
    """Seconds and CPU seconds of the bare loop."""
    target.mkdir(parents=True)
    done = subprocess.run([sys.executable, __file__, "--client", str(port), host_key, directory,
                           str(target)], cwd=ROOT, check=True, capture_output=True, text=True)
    elapsed, cpu = done.stdout.split()
    return float(elapsed), float(cpu)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# the puller ------------------------------------------------------------------------------

def providers_file(workdir: Path, port: int, host_key: str, concurrency: int | None) -> Path:
    import yaml

    entry = {"host": "127.0.0.1", "port": port, "user": "bench", "password_env": "BENCH_PW",
             "host_key": host_key, "service": "testareno", "category": "bench"}
    if concurrency is not None:
        entry["concurrency"] = concurrency
    path = workdir / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": {
        "small": {**entry, "directory": "/small"}, "large": {**entry, "directory": "/large"}}}))
    return path


def puller_run(workdir: Path, port: int, host_key: str, provider: str,
               concurrency: int | None) -> tuple[float, float]:
    """Seconds and CPU seconds of the puller's job."""
    from common import Server

    workdir.mkdir(parents=True)
    listen = free_port()
    env = {"WORKDIR": str(workdir), "LISTEN_PORT": str(listen), "LISTEN_ADDRESS": "127.0.0.1",
           "MAX_LENGTH": str(4 * GiB), "BENCH_PW": PASSWORD,
           "PULL_PROVIDERS": str(providers_file(workdir, port, host_key, concurrency))}
    # the jobs API needs an API key with the scope pulls (issue 11)
    token = subprocess.run([sys.executable, str(ROOT / "app.py"), "keys", "add", "bench",
                            "--scope", "pulls"], env={**os.environ, **env}, check=True,
                           capture_output=True, text=True).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    with Server([sys.executable, str(ROOT / "app.py"), "puller"], env, listen, workdir,
                "/api/v1/health") as server:
        started, cpu_started = time.monotonic(), cpu_seconds(server.pid)
        request = urllib.request.Request(f"{server.base}/api/v1/pulls/{provider}", data=b"",
                                         method="POST", headers=auth)
        with urllib.request.urlopen(request) as response:
            job_id = json.loads(response.read())["job_id"]
        # the jobs list (state and counts, no per-file items): the job's own document
        # lists up to 1,000 files, and polling it 20 times a second took a fifth of the
        # puller's CPU in the profile
        url = f"{server.base}/api/v1/pulls/jobs?provider={provider}&limit=1"
        while True:
            with urllib.request.urlopen(urllib.request.Request(url, headers=auth)) as response:
                [job] = json.loads(response.read())["jobs"]
            if job["id"] == job_id and job["state"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        elapsed, cpu = time.monotonic() - started, cpu_seconds(server.pid) - cpu_started
    if job["state"] != "completed" or job["files"]["failed"]:
        raise SystemExit(f"the pull job did not complete: {job}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--large", type=int, default=GiB)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the providers' concurrency (default: the provider default)")
    args = parser.parse_args()
    banner("pull: loopback SFTP server, bare asyncssh loop vs python app.py puller")
    work = temp_workdir("pull")
    try:
        make_files(work / "remote", args.count, args.size, args.large)
        server, port, host_key = start_server(work / "remote")
        try:
            sets = (("small", args.count * args.size, f"{args.count} x {args.size} B"),
                    ("large", args.large, f"1 x {args.large} B"))
            for round_no in range(args.rounds):
                for name, total, label in sets:
                    tag = f"{round_no}-{name}"
                    bare, bare_cpu = baseline(port, host_key, f"/{name}", work / f"bare-{tag}")
                    pulled, pulled_cpu = puller_run(work / f"puller-{tag}", port, host_key,
                                                    name, args.concurrency)
                    print(f"{label:>22}: bare asyncssh loop {total / bare / 1e6:7.1f} MB/s "
                          f"({bare:.2f} s, CPU {bare_cpu:.2f} s), puller with ingest "
                          f"{total / pulled / 1e6:7.1f} MB/s ({pulled:.2f} s, CPU "
                          f"{pulled_cpu:.2f} s): ratio {bare / pulled:.2f} (target >= 0.7)",
                          flush=True)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(30)
    finally:
        remove_workdir(work)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]))
    elif len(sys.argv) > 5 and sys.argv[1] == "--client":
        asyncio.run(bare_loop(int(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5])))
    else:
        main()
