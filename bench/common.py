"""Shared helpers for the benchmarks: start a gateway (``python app.py``) or the bare
Tornado baseline on free ports with a temporary WORKDIR, stream multipart bodies without
holding them in memory, and sample a process's RSS from /proc/<pid>/status."""
from __future__ import annotations

import http.client
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
GiB = 1024 * MiB
CT_FILE = "application/vnd.redhat.testareno.bench+tgz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def banner(title: str) -> None:
    print(f"# {title} — {time.strftime('%Y-%m-%d %H:%M')} — {machine()}", flush=True)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer\n{log.read_text()[-3000:]}")


class Server:
    """A child process serving HTTP on ``port``; ``stop`` sends SIGTERM and waits."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, workdir: Path,
                 health: str) -> None:
        self.port = port
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{port}"
        self.log = workdir / f"server-{port}.log"
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        _wait_http(self.base + health, self.process, self.log)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def gateway_pid(self) -> int:
        """The process serving HTTP: under a supervisor (``python app.py``, ``--workers``)
        the first gateway child, otherwise the process itself."""
        found = re.findall(r"supervisor started gateway(?:-1)? \(pid (\d+)\)",
                           self.log.read_text(errors="replace"))
        return int(found[-1]) if found else self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_gateway(workdir: Path, env: dict[str, str] | None = None,
                  role: list[str] | None = None) -> Server:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    full = {"WORKDIR": str(workdir), "LISTEN_PORT": str(port), "LISTEN_ADDRESS": "127.0.0.1",
            "MAX_LENGTH": str(4 * GiB), **(env or {})}
    return Server([sys.executable, str(ROOT / "app.py"), *(role or [])], full, port, workdir,
                  "/api/v1/health")


def start_baseline(workdir: Path) -> Server:
    """The bare Tornado baseline (bench/baseline_server.py): /raw writes the raw body to a
    file, /noop answers 202 without parsing or storing."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(ROOT / "bench" / "baseline_server.py"), str(port), str(workdir)]
    return Server(argv, {}, port, workdir, "/health")


def remove_workdir(path: Path) -> None:
    """Remove a run's files, unless ``BENCH_KEEP`` is set. On a journal-less ext4 (this
    machine's) every file created within 60-360 s of a deletion in its inode group makes
    the allocator step past the deleted inodes (``recently_deleted`` in ``perf``: 22 % of
    the gateway's CPU in the small-upload run after another run's clean-up), so a series
    of runs keeps its files and removes them when it is over."""
    if os.environ.get("BENCH_KEEP"):
        print(f"kept {path} (BENCH_KEEP)")
        return
    shutil.rmtree(path, ignore_errors=True)


def temp_workdir(name: str) -> Path:
    base = os.environ.get("BENCH_TMP")  # same file system as the gateway's WORKDIR by default
    return Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=base))


# bodies ---------------------------------------------------------------------------------

def envelope(content_type: str = CT_FILE) -> tuple[bytes, bytes, str]:
    """(head, tail, Content-Type) of a one-file multipart body."""
    boundary = "----bench" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"payload.tgz\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


def small_body(size: int) -> tuple[bytes, str]:
    head, tail, ctype = envelope()
    return head + os.urandom(size) + tail, ctype


BLOCK = os.urandom(MiB)


def file_blocks(size: int) -> Iterator[bytes]:
    """``size`` bytes as 1 MiB blocks of one random MiB (cheap to produce, not sparse)."""
    view = memoryview(BLOCK)
    left = size
    while left > 0:
        n = min(left, MiB)
        yield view[:n]  # type: ignore[misc]
        left -= n


def body_file(directory: Path, size: int, multipart: bool = True) -> tuple[Path, str]:
    """A file holding a one-file multipart body with ``size`` bytes of payload (random
    1 MiB blocks repeated), and its Content-Type. Sent with sendfile, so the load
    generator costs almost no CPU and the same bytes go to the gateway and the baseline."""
    head, tail, ctype = envelope() if multipart else (b"", b"", "application/octet-stream")
    path = directory / f"body-{size}.bin"
    with open(path, "wb") as out:
        out.write(head)
        for block in file_blocks(size):
            out.write(block)
        out.write(tail)
    return path, ctype


def post_file(base: str, path: str, body: Path, ctype: str,
              timeout: float = 900) -> tuple[int, bytes, float]:
    """POST the file ``body`` with a Content-Length (sendfile). Returns (status, response
    body, seconds)."""
    host, port = base.removeprefix("http://").split(":")
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", ctype)
    conn.putheader("Content-Length", str(body.stat().st_size))
    conn.endheaders()
    try:
        with open(body, "rb") as handle:
            conn.sock.sendfile(handle)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered early; read its answer
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    return response.status, data, elapsed


def cpu_seconds(pid: int, which: str = "both") -> float:
    """user + system (or ``which``: user, system) CPU seconds of ``pid`` and of the
    processes it started (a supervisor's children) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    user, system = int(fields[11]), int(fields[12])
    ticks = {"both": user + system, "user": user, "system": system}[which]
    total = ticks / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(cpu_seconds(int(child), which) for child in children)


# memory ---------------------------------------------------------------------------------

def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class RssSampler:
    """Samples VmRSS of ``pid`` every ``interval`` seconds; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.start = proc_status(pid, "VmRSS")
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return

    def stop(self) -> int:
        """Stop sampling; returns the growth of RSS (peak - start) in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"
