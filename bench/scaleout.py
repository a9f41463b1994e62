"""Scale-out benchmark (issue 12): does the pipeline keep up, and do more processes help?

For each scale (1, then 2 of each role) on a fresh set-up of its own: librdkafka's mock
cluster (``python -m bus.kafka_mock``, its topics made with ``--partitions``, 4), a moto S3
server (``bench/moto_keepalive.py``: moto's WSGI app behind Tornado's HTTP/1.1 server,
which keeps connections alive as S3 does; ``--moto werkzeug``: ``python -m moto.server``,
whose werkzeug server closes the connection after every response, so every boto3 call of
the roles opened a TCP connection and moto started a thread for it, CPU that a real S3
deployment does not spend), a fresh database on the PostgreSQL server at
127.0.0.1:5432, and N of each role, ``sys.executable app.py gateway`` / ``validator
testareno`` / ``bundler``, each a process of its own, all started at once. Once every
process is ready and its consumer has partitions (``start_seconds``: on the mock cluster
the second of two members gets its partitions ~18 s after it is ready, see
``Deployment.start``):

1. steady: ``--uploads`` (2,000) small multipart uploads at ``--rate`` (50/s), spread over
   the gateways; half-way one gateway and one validator are SIGKILLed and started again
   (a client whose gateway is gone sends to the next, or again once it is back);
2. burst: ``--burst`` (500) uploads sent as fast as ``--clients`` (8) clients can.

Each phase waits until every 202'd upload is on ``platform.upload.available`` (read from
the start by a consumer of its own) or ``--drain`` seconds pass, and prints: ingest rate
(202s over the sending time), verdict rate (announcements on ``available`` over the time
they came in), end-to-end rate (available over first send → last available), the lag from
the last 202 to the last ``available``, lost (202'd, never available), duplicates on
``available`` (distinct offsets per request_id), not accepted (no 202: the killed gateway),
the verdict stage's cost per payload (``gateway_stage_duration_seconds{stage="verdict"}``
of the gateways that lived to the end) and a profile: CPU seconds of each kind of
process. Last, the ratio of 2-of-each to 1-of-each.

    python bench/scaleout.py [--uploads 2000 --rate 50 --burst 500] [--quick] [--scales 1,2]
                             [--no-kill] [--moto keepalive|werkzeug] [--session-timeout S]

``--session-timeout``: the roles' ``KAFKA_SESSION_TIMEOUT``, 6 s here (the product's default
is 10 s). It is most of the time the killed gateway's and validator's partitions wait for a
new owner: a deployment that kills and restarts processes at will is the one bus/kafka.py
tells to lower it towards the brokers' 6 s floor, and on librdkafka's mock cluster every
rebalance after a member died also holds the group for the session timeout minus 1 s,
twice for a cooperative move (a broker ends it once the live members have rejoined), so
with 10 s the kill's pause on ``available`` was about 20 s and the run's end-to-end rate
0.86-0.89 × ingest (2026-12-01 01:42); ``--session-timeout 10`` measures that.
``--quick``: 400 uploads at 25/s and a burst of 100. Not a test: figures depend on the
machine; everything (moto, the mock cluster, PostgreSQL, the load generator and the roles)
shares its cores.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from common import remove_workdir  # noqa: E402  # bench/, the script's own directory

from bus.kafka import KafkaBus  # noqa: E402
from bus.topics import AVAILABLE, all_topics  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.faults.fault_run import AWS_ENV, Role, _database  # noqa: E402
from tests.helpers import free_port, identity, wait_for  # noqa: E402

CONTENT_TYPE = "application/vnd.redhat.testareno.scaleout+tgz"
ASSIGNED = re.compile(r"group \S+: assigned (?!nothing)")  # bus/kafka.py's INFO line
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class Process(Role):
    """A role's process; a gateway's ``port`` is its LISTEN_PORT. Ready once its log says
    so (a health probe answers late on a loaded machine)."""

    def __init__(self, env: dict[str, str], role: list[str], name: str,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__({**env, "LISTEN_PORT": str(self.port)}, role, name)
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        super().start()
        return self

    def wait_ready(self, line: str, timeout: float = 60) -> None:
        """Wait until this start's part of the log (a restart appends) shows ``line``."""
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.role} exited:\n{self._since()[-3000:]}")
            return line in self._since()
        if not wait_for(ready, timeout, interval=0.2):
            raise RuntimeError(f"{self.role} not ready:\n{self._since()[-3000:]}")

    def wait_ready_pattern(self, pattern: re.Pattern[str], timeout: float) -> None:
        """Wait until this start's part of the log matches ``pattern``."""
        if not wait_for(lambda: pattern.search(self._since()) is not None, timeout, 0.2):
            raise RuntimeError(f"{self.role}: no {pattern.pattern!r}:\n{self._since()[-3000:]}")

    def _since(self) -> str:
        with self.log.open("rb") as file:
            file.seek(self.offset)
            return file.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        assert self.process is not None
        try:
            return super().stop(sig, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@dataclass
class Sent:
    index: int
    sent_at: float
    status: int = 0
    answered_at: float = 0.0
    request_id: str | None = None


@dataclass
class Phase:
    name: str
    count: int
    rate: float | None  # None: as fast as the clients go
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Tally:
    """Reads ``available`` from the start: first arrival time and offsets per request_id."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaBus(settings, session_timeout=1.0).consumer(
            f"scaleout-{uuid.uuid4().hex[:8]}", [AVAILABLE])
        self.first: dict[str, float] = {}
        self.offsets: dict[str, set[tuple[int, int]]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.2)
            if message is None:
                continue
            now = time.monotonic()
            try:
                request_id = json.loads(message.value).get("request_id")
            except (ValueError, AttributeError):
                continue
            with self.lock:
                self.first.setdefault(request_id, now)
                self.offsets.setdefault(request_id, set()).add((message.partition, message.offset))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


class Deployment:
    """The services and the roles of one scale."""

    def __init__(self, scale: int, partitions: int, brokers: int, workdir: Path,
                 moto: str = "keepalive", session_timeout: float | None = None) -> None:
        self.scale, self.workdir = scale, workdir
        suffix = uuid.uuid4().hex[:10]
        self.db_name = f"gw_scaleout_{suffix}"
        topics = all_topics(Settings.from_env({"WORKDIR": str(workdir)}))
        self.mock = subprocess.Popen(
            [sys.executable, "-m", "bus.kafka_mock", "--brokers", str(brokers),
             "--partitions", str(partitions), *topics],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.mock.stdout is not None
        bootstrap = self.mock.stdout.readline().strip()
        moto_port = free_port()
        server = (["-m", "moto.server"] if moto == "werkzeug"
                  else [str(ROOT / "bench" / "moto_keepalive.py")])
        self.moto = subprocess.Popen(
            [sys.executable, *server, "-H", "127.0.0.1", "-p", str(moto_port)],
            cwd=ROOT, env={**os.environ, **AWS_ENV}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{moto_port}/"), 30), "moto"
        _database(self.db_name, create=True)
        self.env = {**AWS_ENV, "STORAGE_DRIVER": "s3",
                    "S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
                    "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}",
                    "S3_REJECT": f"r-{suffix}", "URL_SIGNING_KEY": f"scaleout-{suffix}",
                    "KAFKAMQ": bootstrap, "LOG_LEVEL": "WARNING",
                    "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"}
        if session_timeout is not None:
            self.env["KAFKA_SESSION_TIMEOUT"] = f"{session_timeout:g}"
        self.settings = Settings.from_env({**self.env, "WORKDIR": str(workdir)})
        self.gateways: list[Process] = []
        self.validators: list[Process] = []
        self.bundlers: list[Process] = []
        self.cpu_of_killed: dict[str, float] = {}
        self.restarted = False
        self.killed_at = self.ready_at = 0.0  # time.monotonic() of the kill, of both back

    def start(self) -> None:
        """All roles at once (migrations under their lock), then wait for each."""
        self.validators = [self._role(["validator", "testareno"], f"validator-{n}")
                           for n in range(self.scale)]
        self.bundlers = [self._role(["bundler"], f"bundler-{n}") for n in range(self.scale)]
        self.gateways = [self._role(["gateway"], f"gateway-{n}") for n in range(self.scale)]
        for role in self.validators + self.bundlers:
            role.wait_ready("running", 120)
        for gateway in self.gateways:
            gateway.wait_ready("gateway listening", 120)
        # Each consumer group settles before the load: a process is ready before its
        # consumer has partitions, and on librdkafka's mock every join holds the group in
        # Joining for the session timeout minus 1 s, twice for a cooperative move (the
        # second of 2 gateways got its partitions 18 s after it was ready), which a broker
        # ends as soon as every member has rejoined. The kill is measured, not the start.
        for role in self.gateways + self.validators + self.bundlers:
            role.wait_ready_pattern(ASSIGNED, 120)

    def _role(self, role: list[str], name: str, port: int | None = None) -> Process:
        return Process({**self.env, "WORKDIR": str(self.workdir / name)}, role, name,
                       port).start()

    def kill_and_restart(self) -> None:
        """SIGKILL the first gateway and the first validator, then start them again."""
        gateway, validator = self.gateways[0], self.validators[0]
        for kind, process in (("gateway", gateway.process), ("validator", validator.process)):
            assert process is not None
            self.cpu_of_killed[kind] = self.cpu_of_killed.get(kind, 0.0) + cpu_seconds(process.pid)
            process.send_signal(signal.SIGKILL)
        self.killed_at = time.monotonic()
        for process in (gateway.process, validator.process):
            assert process is not None
            process.wait(30)
        self.validators[0] = self._role(["validator", "testareno"], "validator-0")
        restarted = self._role(["gateway"], "gateway-0", gateway.port)
        restarted.wait_ready("gateway listening", 120)
        self.gateways[0] = restarted
        self.validators[0].wait_ready("running", 120)
        self.ready_at = time.monotonic()
        self.restarted = True

    def ports(self) -> list[int]:
        return [gateway.port for gateway in self.gateways]

    def verdict_cost(self) -> dict[str, float]:
        """Mean seconds per payload (stage verdict) and per batch, over the live gateways."""
        sums: dict[str, list[float]] = {}
        for gateway in self.gateways:
            try:
                with urllib.request.urlopen(gateway.base + "/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                for stage in ("verdict", "verdict_batch", "upload_to_verdict"):
                    for kind in ("sum", "count"):
                        if line.startswith(f'gateway_stage_duration_seconds_{kind}{{stage="{stage}"}}'):
                            sums.setdefault(f"{stage}_{kind}", []).append(float(line.split()[-1]))
        out = {}
        for stage in ("verdict", "verdict_batch", "upload_to_verdict"):
            count = sum(sums.get(f"{stage}_count", []))
            if count:
                out[stage] = sum(sums.get(f"{stage}_sum", [])) / count
        out["verdict_batches"] = sum(sums.get("verdict_batch_count", []))
        return out

    def profile(self, own_start: float) -> dict[str, float]:
        cpu: dict[str, float] = dict(self.cpu_of_killed)
        for kind, processes in (("gateway", [g.process for g in self.gateways]),
                                ("validator", [r.process for r in self.validators]),
                                ("bundler", [r.process for r in self.bundlers])):
            cpu[kind] = cpu.get(kind, 0.0) + sum(cpu_seconds(p.pid) for p in processes if p)
        cpu["mock kafka"] = cpu_seconds(self.mock.pid)
        cpu["moto"] = cpu_seconds(self.moto.pid)
        times = os.times()
        cpu["load generator"] = times.user + times.system - own_start
        cpu["postgresql"] = _postgres_cpu(self.db_name)
        return {kind: round(value, 1) for kind, value in cpu.items()}

    def stop(self) -> None:
        for role in self.gateways + self.validators + self.bundlers:
            try:
                role.stop(timeout=40)
            except Exception as exc:  # noqa: BLE001 - the others still stop
                print(f"  stop: {exc}"[:300], file=sys.stderr)
        for process in (self.mock, self.moto):
            process.terminate()
            process.wait(20)
        _database(self.db_name, create=False)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _postgres_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving ``database`` (the server is shared:
    other databases' backends are not counted; backends that ended are lost)."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if database.encode() not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _logged(func: Any) -> Any:
    def run() -> None:
        try:
            func()
        except BaseException as exc:  # noqa: BLE001 - said, the run goes on
            print(f"  kill and restart failed: {exc}"[:2000], file=sys.stderr, flush=True)
    return run


def drive(phase: Phase, deployment: Deployment, clients: int,
          kill_at: int | None = None) -> None:
    """Send ``phase.count`` uploads at ``phase.rate`` (or at once), round robin over the
    gateways; at upload ``kill_at`` the kill-and-restart runs beside the load."""
    counter = itertools.count().__next__
    start = time.monotonic()
    killer: list[threading.Thread] = []

    def client() -> None:
        session = requests.Session()
        while (index := counter()) < phase.count:
            if kill_at is not None and index == kill_at:
                thread = threading.Thread(target=_logged(deployment.kill_and_restart), daemon=True)
                thread.start()
                killer.append(thread)
            if phase.rate:
                time.sleep(max(0.0, start + index / phase.rate - time.monotonic()))
            sent = Sent(index, time.monotonic())
            body = os.urandom(1024)
            deadline = time.monotonic() + 90
            attempt = 0
            while time.monotonic() < deadline:
                ports = deployment.ports()
                port = ports[(index + attempt) % len(ports)]
                try:
                    response = session.post(
                        f"http://127.0.0.1:{port}/api/v1/upload",
                        files={"file": (f"p{index}.tgz", body, CONTENT_TYPE)},
                        headers={"x-rh-identity": identity()}, timeout=60)
                    sent.status = response.status_code
                    if response.status_code == 202:
                        sent.request_id = response.json()["request_id"]
                        break
                except (requests.RequestException, ValueError):
                    session.close()
                    session = requests.Session()
                attempt += 1
                time.sleep(0.1 if len(ports) > 1 else 0.5)
            sent.answered_at = time.monotonic()
            with phase.lock:
                phase.sent.append(sent)
        session.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for thread in killer:
        thread.join(120)


def figures(phase: Phase, tally: Tally, drain: float) -> dict[str, Any]:
    accepted = {s.request_id: s for s in phase.sent if s.request_id}
    wait_for(lambda: all(rid in tally.first for rid in accepted), drain, interval=0.2)
    with tally.lock:
        first = {rid: tally.first[rid] for rid in accepted if rid in tally.first}
        dupes = sum(1 for rid in accepted if len(tally.offsets.get(rid, ())) > 1)
    began = min(s.sent_at for s in phase.sent)
    last_202 = max(s.answered_at for s in accepted.values())
    arrivals = sorted(first.values())
    out: dict[str, Any] = {
        "sent": len(phase.sent), "accepted": len(accepted),
        "not_accepted": len(phase.sent) - len(accepted),
        "available": len(first), "lost": len(accepted) - len(first), "duplicates": dupes,
        "ingest_rate": round(len(accepted) / (last_202 - began), 1),
    }
    if len(arrivals) > 1:
        # the longest pause in announcements (the kill's, when there is one), from the start
        gap, after = max((b - a, a) for a, b in zip(arrivals, arrivals[1:]))
        out["longest_pause_in_available"] = f"{gap:.1f} s from +{after - began:.1f} s"
        out["verdict_rate"] = round(len(arrivals) / (arrivals[-1] - arrivals[0]), 1)
        out["end_to_end_rate"] = round(len(arrivals) / (arrivals[-1] - began), 1)
        out["lag_last_202_to_last_available"] = round(arrivals[-1] - last_202, 2)
    return out


def run_scale(scale: int, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"scaleout-{scale}-"))
    own_start = sum(os.times()[:2])
    deployment = Deployment(scale, args.partitions, args.brokers, workdir, args.moto,
                            args.session_timeout)
    tally: Tally | None = None
    try:
        started = time.monotonic()
        deployment.start()
        # start, and every consumer group settled with partitions for each process
        result: dict[str, Any] = {"start_seconds": round(time.monotonic() - started, 1)}
        tally = Tally(deployment.settings)
        loaded = time.monotonic()
        at_start = deployment.profile(own_start)  # start-up (imports, migrations) apart
        steady = Phase("steady", args.uploads, args.rate)
        drive(steady, deployment, args.clients, kill_at=None if args.no_kill else args.uploads // 2)
        result["steady"] = figures(steady, tally, args.drain)
        result["steady"]["killed_and_restarted"] = deployment.restarted
        if deployment.restarted:  # seconds from the first send
            began = min(sent.sent_at for sent in steady.sent)
            result["steady"]["killed_at"] = f"+{deployment.killed_at - began:.1f} s"
            result["steady"]["both_back_at"] = f"+{deployment.ready_at - began:.1f} s"
        burst = Phase("burst", args.burst, None)
        drive(burst, deployment, args.clients)
        result["burst"] = figures(burst, tally, args.drain)
        result["verdict_cost_seconds"] = {k: round(v, 4) if isinstance(v, float) else v
                                          for k, v in deployment.verdict_cost().items()}
        profile = {kind: round(value - at_start.get(kind, 0.0), 1)
                   for kind, value in deployment.profile(own_start).items()}
        result["cpu_seconds"] = profile  # during the load only
        wall = time.monotonic() - loaded
        total = sum(profile.values())
        uploads = result["steady"]["accepted"] + result["burst"]["accepted"]
        # what the whole system needs per upload, and the most this machine's cores allow
        result["cpu_per_upload_ms"] = round(1000 * total / uploads, 1)
        result["cpu_use"] = (f"{total:.0f} s of CPU in {wall:.0f} s under load: "
                             f"{total / wall:.2f} of {os.cpu_count()} cores; at this cost "
                             f"{os.cpu_count()} cores carry at most "
                             f"{uploads * os.cpu_count() / total:.0f} uploads/s end to end")
        return result
    finally:
        if tally is not None:
            tally.stop()
        deployment.stop()
        remove_workdir(workdir)  # the roles' logs and WORKDIRs (kept with BENCH_KEEP=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--scales", default="1,2")
    parser.add_argument("--drain", type=float, default=180.0)
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--session-timeout", type=float, default=6.0,
                        help="KAFKA_SESSION_TIMEOUT of the roles (6 s; the product's default "
                             "is 10 s)")
    parser.add_argument("--moto", choices=("keepalive", "werkzeug"), default="keepalive",
                        help="moto behind Tornado with keep-alive (bench/moto_keepalive.py), "
                             "or moto's own werkzeug server (a connection per request)")
    parser.add_argument("--quick", action="store_true", help="400 at 25/s, burst 100")
    args = parser.parse_args()
    if args.quick:
        args.uploads, args.rate, args.burst = 400, 25.0, 100
    os.environ.update(AWS_ENV)
    scales = [int(s) for s in args.scales.split(",")]
    print(f"scale-out: {args.uploads} uploads at {args.rate:g}/s"
          f"{'' if args.no_kill else ' (SIGKILL of a gateway and a validator half-way)'}, "
          f"burst {args.burst}, {args.clients} clients, {args.partitions} partitions, "
          f"{args.brokers} broker(s), moto {args.moto}, Kafka session timeout "
          f"{args.session_timeout:g} s; {os.cpu_count()} CPUs", flush=True)
    results = {}
    for scale in scales:
        print(f"\n== {scale} of each role (gateway, validator testareno, bundler)", flush=True)
        results[scale] = result = run_scale(scale, args)
        for key, value in result.items():
            print(f"  {key}: {value}", flush=True)
    if 1 in results and len(results) > 1:
        other = max(results)
        print(f"\nratio {other}-of-each / 1-of-each:")
        for phase in ("steady", "burst"):
            for metric in ("ingest_rate", "verdict_rate", "end_to_end_rate"):
                one, more = results[1][phase].get(metric), results[other][phase].get(metric)
                if one and more:
                    print(f"  {phase} {metric}: {more / one:.2f} ({one} -> {more})")
    steady = [r["steady"] for r in results.values()]
    bad = [s for s in steady if s["lost"] or s["duplicates"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
