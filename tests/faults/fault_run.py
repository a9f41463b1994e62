"""The fault run of issue 10 ("Proof"): every 202 reaches a verdict on its own bytes,
whatever the storage, the brokers, the database, a neighbour gateway or a bad message do.

Set-up, all on loopback and all of it the run's own: librdkafka's mock cluster (in this
process, bus/kafka_mock.py), a moto S3 server behind a fault proxy (tests/faults/s3proxy.py),
a fresh database on the PostgreSQL server at 127.0.0.1:5432 reached through a TCP proxy
(tests/faults/tcpproxy.py; cutting the proxy is PostgreSQL stopped for the gateway, the real
server keeps running), and separate ``python app.py ROLE`` processes: two gateways, two
validators (``VALIDATORS=testareno:archive``, so a payload that is not a tar.gz is rejected
by a real check) and a bundler.

Load: ``clients`` threads post real multipart uploads (requests) to both gateways in turn,
at ``rate`` uploads a second in all, for the whole run; one payload in seven is random
bytes (not an archive: to be rejected), the others are tar.gz archives of random content.
While the load runs, in turn: S3 is cut (every request reset) for ``cut`` seconds, the
brokers are taken down for ``cut`` seconds, PostgreSQL is cut for ``cut`` seconds, one
gateway is SIGKILLed and restarted on its port, then one oversized verdict (a success
with a 950 KB ``id``, for a payload that is to be rejected) and 100 malformed messages (on
the verdict, announcement, asset-transfer and available topics) are published.

Then the load stops and the run waits (``drain``) until every 202'd upload is decided, and
counts: every 202'd valid payload ``available``, every 202'd invalid one ``rejected`` by the
check (not by the timeout), 0 lost (202'd but not decided, or without a record), 0
duplicates on ``platform.upload.available`` (read from the start by a consumer of its own),
every perm object's sha256 equal to the one the client computed, every process still
running and stopping with status 0 on SIGTERM; and no hang: every upload answered within
``CLIENT_TIMEOUT`` and some accepted after each fault ended.

``run(Phases(...))`` returns the figures (a dict) and ``problems(figures)`` lists what is
wrong with them; tests/faults/test_fault_run.py runs it with short phases,
``python bench/fault_run.py --minutes N`` with 30 s outages.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
import requests
from confluent_kafka import Producer
from sqlalchemy import create_engine, text

from bus.kafka import KafkaBus
from bus.kafka_mock import MockKafkaCluster
from bus.topics import ASSET_TRANSFER, AVAILABLE, VALIDATION, all_topics, service_topic
from core.settings import Settings
from tests.e2e import ROOT, Gateway
from tests.faults.s3proxy import FaultProxy
from tests.faults.tcpproxy import TcpProxy
from tests.helpers import identity, wait_for

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SERVICE = "testareno"
CONTENT_TYPE = "application/vnd.redhat.testareno.faultrun+tgz"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
FINAL = ("available", "rejected")
# an upload here takes seconds at most, outages included (the 503s come at once): a client
# that waited this long for an answer found a hang
CLIENT_TIMEOUT = 60.0
# after each of these the gateways must accept uploads again
RECOVERY = ("S3 back", "brokers up", "PostgreSQL back", "gateway 2 restarted")

log = logging.getLogger("fault_run")


@dataclass
class Phases:
    """Seconds of each phase of the load, and its shape."""

    warmup: float = 10.0   # load before the first fault
    cut: float = 30.0      # each outage: S3, brokers, PostgreSQL
    gap: float = 20.0      # load between two faults
    tail: float = 20.0     # load after the bad messages
    clients: int = 4
    rate: float = 6.0      # uploads a second, all clients together
    drain: float = 300.0   # longest wait for every verdict once the load stops
    validation_timeout: int = 900
    invalid_every: int = 7  # one payload in this many is not an archive

    @classmethod
    def for_minutes(cls, minutes: float, cut: float = 30.0, **options: Any) -> Phases:
        """Phases whose load lasts about ``minutes``: the gaps take what the cuts leave."""
        phases = cls(cut=cut, **options)
        fixed = phases.warmup + 3 * cut + phases.tail + 10  # ~10 s: a gateway's restart
        phases.gap = max(5.0, (minutes * 60 - fixed) / 4)
        return phases


@dataclass
class Sent:
    index: int
    gateway: int
    valid: bool
    sha256: str
    size: int
    phase: str
    status: int = 0  # 0: no answer
    request_id: str | None = None
    error: str = ""
    seconds: float = 0.0


@dataclass
class Run:
    """What one run holds while it runs."""

    phases: Phases
    directory: Path
    phase: str = "start"
    sent: list[Sent] = field(default_factory=list)
    stop_load: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        at = time.monotonic() - self.started
        self.phase = phase
        self.timeline.append((round(at, 1), phase))
        log.info("%6.1fs  %s", at, phase)


class Role:
    """A ``python app.py ROLE`` process that serves no HTTP (validator, bundler)."""

    def __init__(self, env: dict[str, str], role: list[str], name: str) -> None:
        self.env = {**os.environ, **env}
        self.role = role
        self.log = Path(env["WORKDIR"]) / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Role:
        Path(self.env["WORKDIR"]).mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *self.role], cwd=ROOT, env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, line: str, timeout: float = 60) -> None:
        """Wait until the log shows ``line``; fail at once when the process ended."""
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.role} exited:\n{self.log.read_text()[-3000:]}")
            return line in self.log.read_text(errors="replace")
        if not wait_for(ready, timeout, interval=0.2):
            raise AssertionError(f"{self.role} not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def payload(index: int, invalid_every: int) -> tuple[bytes, bool]:
    """(bytes, valid): a tar.gz of random content, or, one in ``invalid_every``, random
    bytes that no archive check accepts. Mostly up to 256 KiB, one in 20 a few MiB."""
    rng = random.Random(index)
    size = rng.randint(2_000_000, 6_000_000) if index % 20 == 11 else rng.randint(1, 256 * 1024)
    content = rng.randbytes(size)
    if index % invalid_every == invalid_every // 2:
        return b"\x00not an archive\x00" + content, False
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo(f"fault-run/{index}.bin")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return out.getvalue(), True


def client(run: Run, ports: list[int], number: int, counter: Callable[[], int]) -> None:
    """One client: uploads at its share of the rate until the load stops."""
    phases = run.phases
    interval = phases.clients / phases.rate
    next_at = time.monotonic() + number * interval / phases.clients
    session = requests.Session()
    while not run.stop_load.is_set():
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at + interval, time.monotonic())
        index = counter()
        data, valid = payload(index, phases.invalid_every)
        which = index % len(ports)
        sent = Sent(index, which, valid, hashlib.sha256(data).hexdigest(), len(data), run.phase)
        started = time.monotonic()
        try:
            response = session.post(
                f"http://127.0.0.1:{ports[which]}/api/v1/upload",
                files={"file": (f"payload-{index}.tgz", data, CONTENT_TYPE)},
                headers={"x-rh-identity": identity()}, timeout=CLIENT_TIMEOUT)
            sent.status = response.status_code
            if response.status_code == 202:
                sent.request_id = response.json()["request_id"]
        except (requests.RequestException, ValueError) as exc:
            sent.error = type(exc).__name__
            session.close()
            session = requests.Session()
        sent.seconds = time.monotonic() - started
        with run.lock:
            run.sent.append(sent)
    session.close()


class AvailableTally:
    """Reads ``platform.upload.available`` from the start; counts the messages about each
    request_id."""

    def __init__(self, settings: Settings, phase: Callable[[], str] = lambda: "") -> None:
        self.phase = phase
        self.copies_in: dict[str, int] = {}  # phase → later copies first seen in it
        # its own reconnect failures while the brokers are down are the run's, not news
        self._rdkafka = logging.getLogger("bus.kafka.librdkafka")
        self._level = self._rdkafka.level
        self._rdkafka.setLevel(logging.CRITICAL)
        self.consumer = KafkaBus(settings, session_timeout=1.0).consumer(
            f"fault-run-{uuid.uuid4().hex[:8]}", [AVAILABLE])
        self.offsets: dict[str, set[tuple[int, int]]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> AvailableTally:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.2)
            if message is None:
                continue
            try:
                request_id = json.loads(message.value).get("request_id")
            except (ValueError, AttributeError):
                continue  # the malformed ones the run publishes itself
            if isinstance(request_id, str):
                with self.lock:
                    offsets = self.offsets.setdefault(request_id, set())
                    where = (message.partition, message.offset)
                    if offsets and where not in offsets:
                        phase = self.phase()
                        self.copies_in[phase] = self.copies_in.get(phase, 0) + 1
                    offsets.add(where)

    def seen(self) -> dict[str, int]:
        """request_id → messages about it (distinct offsets: this consumer commits
        nothing, so it reads a partition again after a rebalance; that is no duplicate)."""
        with self.lock:
            return {rid: len(offsets) for rid, offsets in self.offsets.items()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()
        self._rdkafka.setLevel(self._level)


MALFORMED: list[bytes] = [
    b"", b"not json \xff\xfe", b"[1, 2, 3]", b"null", b'"a string"', b'{"request_id": 5}',
    b'{"request_id": "fault-run-unknown", "validation": 7}', b'{"request_id": "truncated"',
    b'{"type": ["sdc_asset_transfer_file_created"], "case_number": {"a": 1}}',
    b'{"request_id": ["x"], "url": 3, "type": null}',
]


def publish_bad_messages(bootstrap: str, invalid_request_id: str) -> dict[str, int]:
    """One oversized verdict (a success with a 950 KB id, for a payload its check rejects)
    and 100 malformed messages spread over the topics the roles consume."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000,
                         "log_level": 0})
    oversized = json.dumps({"request_id": invalid_request_id, "validation": "success",
                            "service": SERVICE, "id": "x" * 950_000}).encode()
    counts: dict[str, int] = {}
    errors: list[str] = []

    def report(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(str(error))

    producer.produce(VALIDATION, oversized, key=invalid_request_id.encode(), on_delivery=report)
    counts["oversized verdict"] = 1
    topics = [VALIDATION, service_topic(SERVICE), ASSET_TRANSFER, AVAILABLE]
    for number in range(100):
        topic = topics[number % len(topics)]
        producer.produce(topic, MALFORMED[number % len(MALFORMED)], on_delivery=report)
        counts[topic] = counts.get(topic, 0) + 1
    left = producer.flush(30)
    if left or errors:
        raise RuntimeError(f"bad messages not all delivered: {left} left, errors {errors[:3]}")
    return counts


def _database(name: str, create: bool) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if create:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def run(phases: Phases, directory: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """One fault run; returns its figures. ``directory`` holds the processes' logs (a
    temporary one, removed afterwards unless ``keep``, when not given)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request

    own_directory = directory is None
    workdir = Path(tempfile.mkdtemp(prefix="fault-run-")) if directory is None else directory
    workdir.mkdir(parents=True, exist_ok=True)
    state = Run(phases, workdir)
    saved_env = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    suffix = uuid.uuid4().hex[:10]
    db_name = f"gw_faultrun_{suffix}"
    cluster = MockKafkaCluster().start(brokers=1)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, moto_port = moto.get_host_and_port()
    moto_url = f"http://{host}:{moto_port}"
    s3_proxy = FaultProxy(moto_url).start()
    pg_proxy = TcpProxy("127.0.0.1", 5432).start()
    _database(db_name, create=True)
    admin_base = PG_ADMIN_URL.rsplit("/", 1)[0]
    base = {**AWS_ENV, "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": s3_proxy.url,
            "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}",
            "URL_SIGNING_KEY": f"fault-run-{suffix}", "KAFKAMQ": cluster.bootstrap,
            "DATABASE_URL": admin_base.replace("postgresql+psycopg://", "postgresql://")
            .replace("127.0.0.1:5432", f"127.0.0.1:{pg_proxy.port}") + f"/{db_name}",
            "VALIDATORS": f"{SERVICE}:archive", "VALIDATION_TIMEOUT": str(phases.validation_timeout)}
    settings = Settings.from_env({**base, "WORKDIR": str(workdir)})
    for topic in all_topics(settings):
        cluster.create_topic(topic, partitions=2)
    gateways: list[Gateway] = []
    roles: list[Role] = []
    tally: AvailableTally | None = None
    threads: list[threading.Thread] = []
    figures: dict[str, Any] = {}
    try:
        state.mark("starting processes")
        gateways = [Gateway({**base, "WORKDIR": str(workdir / f"gateway-{n}")}, ["gateway"]).start()
                    for n in (1, 2)]
        roles = [Role({**base, "WORKDIR": str(workdir / f"validator-{n}")}, ["validator", SERVICE],
                      f"validator-{n}").start() for n in (1, 2)]
        roles.append(Role({**base, "WORKDIR": str(workdir / "bundler")}, ["bundler"],
                          "bundler").start())
        for role in roles:
            role.wait_ready("running")  # "validator for testareno running", "bundler running"
        counted = AvailableTally(settings, lambda: state.phase).start()
        tally = counted
        ports = [g.port for g in gateways]
        counter = itertools.count().__next__
        state.mark("load: warm-up")
        threads = [threading.Thread(target=client, args=(state, ports, n, counter), daemon=True)
                   for n in range(phases.clients)]
        for thread in threads:
            thread.start()
        time.sleep(phases.warmup)
        # the pipeline works end to end before the first fault
        assert wait_for(lambda: any(s.request_id in tally.seen() for s in list(state.sent)
                                    if s.request_id), 120, interval=0.5), "nothing got available"

        state.mark("S3 cut")
        s3_proxy.fault = lambda method, path: "reset"
        time.sleep(phases.cut)
        s3_proxy.fault = lambda method, path: None
        state.mark("S3 back")
        time.sleep(phases.gap)

        state.mark("brokers down")
        cluster.set_down()
        time.sleep(phases.cut)
        cluster.set_up()
        state.mark("brokers up")
        time.sleep(phases.gap)

        state.mark("PostgreSQL cut")
        pg_proxy.cut()
        time.sleep(phases.cut)
        pg_proxy.restore()
        state.mark("PostgreSQL back")
        time.sleep(phases.gap)

        state.mark("gateway 2 SIGKILL")
        victim = gateways[1]
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(30)
        gateways[1] = Gateway({**base, "WORKDIR": str(workdir / "gateway-2"),
                               "LISTEN_PORT": str(victim.port)}, ["gateway"]).start()
        state.mark("gateway 2 restarted")
        time.sleep(phases.gap)

        with state.lock:
            invalid = [s.request_id for s in state.sent if s.request_id and not s.valid]
        assert invalid, "no invalid payload was accepted before the bad messages"
        state.mark("bad messages")
        figures["bad_messages"] = publish_bad_messages(cluster.bootstrap, invalid[-1])
        figures["oversized_verdict_for"] = invalid[-1]
        time.sleep(phases.tail)
        state.mark("load stops")
        state.stop_load.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT + 30)
        with state.lock:
            sent = list(state.sent)
        accepted = {s.request_id: s for s in sent if s.status == 202 and s.request_id}

        state.mark("drain")
        engine = create_engine(base["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
        try:
            def rows() -> dict[str, dict[str, Any]]:
                with engine.connect() as conn:
                    result = conn.execute(text(
                        "SELECT request_id, status, reason, object_key, sha256, size FROM uploads"))
                    return {r.request_id: dict(r._mapping) for r in result}

            def decided() -> bool:
                now = rows()
                seen = tally.seen() if tally else {}
                return all(now.get(rid, {}).get("status") in FINAL and
                           (now[rid]["status"] != "available" or rid in seen) for rid in accepted)
            drained = wait_for(decided, phases.drain, interval=1.0)
            state.mark("drained" if drained else "drain deadline passed")
            time.sleep(3)  # late duplicates, if any, arrive before the count
            final_rows = rows()
        finally:
            engine.dispose()
        seen = tally.seen()
        s3 = boto3.client("s3", endpoint_url=moto_url)
        figures.update(count(accepted, sent, final_rows, seen, s3, base["S3_PERM"]))
        figures["duplicates_seen_in"] = dict(counted.copies_in)
        figures["alive_at_end"] = {name: proc.process is not None and proc.process.poll() is None
                                   for name, proc in _named(gateways, roles)}
    finally:
        state.stop_load.set()
        for thread in threads:
            thread.join(60)
        s3_proxy.fault = lambda method, path: None
        cluster.set_up()
        pg_proxy.restore()
        exits: dict[str, int | None] = {}
        for name, proc in _named(gateways, roles):
            try:
                exits[name] = proc.stop()
            except subprocess.TimeoutExpired:
                assert proc.process is not None
                proc.process.kill()
                exits[name] = None
        figures["exit_status"] = exits
        if tally is not None:
            tally.stop()
        s3_proxy.stop()
        pg_proxy.stop()
        moto.stop()
        cluster.close()
        try:
            _database(db_name, create=False)
        except Exception as exc:  # noqa: BLE001 - the figures matter more than the clean-up
            log.warning("could not drop %s: %s", db_name, exc)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        figures["timeline"] = state.timeline
        figures["logs"] = str(workdir)
        if own_directory and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _named(gateways: list[Gateway], roles: list[Role]) -> list[tuple[str, Gateway | Role]]:
    named: list[tuple[str, Gateway | Role]] = [(f"gateway-{n}", g) for n, g in enumerate(gateways, 1)]
    names = ["validator-1", "validator-2", "bundler"]
    return named + list(zip(names, roles))


def count(accepted: dict[str, Sent], sent: list[Sent], rows: dict[str, dict[str, Any]],
          seen: dict[str, int], s3: Any, perm_bucket: str) -> dict[str, Any]:
    """The figures of a finished run."""
    answers: dict[str, dict[str, int]] = {}
    for s in sent:
        key = str(s.status) if s.status else f"no answer ({s.error})"
        phase = answers.setdefault(s.phase, {})
        phase[key] = phase.get(key, 0) + 1
    statuses: dict[str, int] = {}
    lost, timeout, wrong, sha_mismatch = [], [], [], []
    available_valid = rejected_invalid = 0
    for rid, s in accepted.items():
        row = rows.get(rid)
        status = row["status"] if row else "no record"
        statuses[status] = statuses.get(status, 0) + 1
        if status not in FINAL:
            lost.append(rid)
            continue
        assert row is not None
        if status == "rejected" and (row["reason"] or "").startswith("timeout"):
            timeout.append(rid)
        elif s.valid != (status == "available"):
            wrong.append(f"{rid}: valid={s.valid} {status} {row['reason']}")
        elif s.valid:
            available_valid += 1
        else:
            rejected_invalid += 1
        if status == "available":
            body = s3.get_object(Bucket=perm_bucket, Key=row["object_key"])["Body"].read()
            if hashlib.sha256(body).hexdigest() != s.sha256 or row["sha256"] != s.sha256:
                sha_mismatch.append(rid)
    available = [rid for rid in accepted if rows.get(rid, {}).get("status") == "available"]
    duplicates = sum(seen.get(rid, 0) - 1 for rid in available if seen.get(rid, 0) > 1)
    missing_message = [rid for rid in available if not seen.get(rid)]
    hung = [s for s in sent if s.error in ("ReadTimeout", "Timeout")]
    recovered = {phase: answers.get(phase, {}).get("202", 0) for phase in RECOVERY}
    return {
        "hung_requests": len(hung),
        "slowest_answer_seconds": round(max((s.seconds for s in sent if s.status), default=0), 1),
        "accepted_after": recovered,
        "uploads_sent": len(sent), "accepted_202": len(accepted),
        "accepted_valid": sum(1 for s in accepted.values() if s.valid),
        "accepted_invalid": sum(1 for s in accepted.values() if not s.valid),
        "answers_by_phase": answers, "statuses": statuses,
        "available_valid": available_valid, "rejected_by_check": rejected_invalid,
        "lost": len(lost), "lost_ids": lost[:10],
        "rejected_by_timeout": len(timeout), "wrong_verdict": wrong[:10],
        "wrong_verdicts": len(wrong),
        "duplicates_on_available": duplicates,
        "available_without_message": len(missing_message),
        "perm_sha256_checked": len(available), "perm_sha256_mismatch": len(sha_mismatch),
        "recorded_without_202": sum(1 for rid in rows if rid not in accepted),
    }


def problems(figures: dict[str, Any]) -> list[str]:
    """What is wrong with a run's figures (empty: the promise held)."""
    found = []
    for key in ("lost", "rejected_by_timeout", "wrong_verdicts", "duplicates_on_available",
                "available_without_message", "perm_sha256_mismatch"):
        if figures.get(key):
            found.append(f"{key}: {figures[key]}")
    if figures.get("hung_requests"):
        found.append(f"hung_requests: {figures['hung_requests']} uploads got no answer "
                     f"within {CLIENT_TIMEOUT:.0f}s")
    for phase, accepted in figures.get("accepted_after", {}).items():
        if not accepted:
            found.append(f"no upload accepted after {phase!r}: the gateways did not recover")
    if not figures.get("accepted_202"):
        found.append("no upload was accepted")
    if not figures.get("rejected_by_check"):
        found.append("no invalid payload was rejected by its check (the path was not exercised)")
    for name, alive in figures.get("alive_at_end", {}).items():
        if not alive:
            found.append(f"{name} was not running at the end")
    for name, status in figures.get("exit_status", {}).items():
        if status != 0:
            found.append(f"{name} exited {status} on SIGTERM")
    return found


def report(figures: dict[str, Any]) -> str:
    """The figures as lines for people."""
    lines = ["fault run:"]
    for at, phase in figures.get("timeline", []):
        lines.append(f"  {at:7.1f}s  {phase}")
    for key in ("hung_requests", "slowest_answer_seconds", "uploads_sent", "accepted_202",
                "accepted_valid", "accepted_invalid",
                "available_valid", "rejected_by_check", "lost", "rejected_by_timeout",
                "wrong_verdicts", "duplicates_on_available", "available_without_message",
                "perm_sha256_checked", "perm_sha256_mismatch", "recorded_without_202"):
        lines.append(f"  {key:<26} {figures.get(key)}")
    lines.append(f"  duplicates seen in         {json.dumps(figures.get('duplicates_seen_in'))}")
    lines.append(f"  accepted after             {json.dumps(figures.get('accepted_after'))}")
    lines.append(f"  statuses                   {json.dumps(figures.get('statuses'))}")
    lines.append(f"  bad messages               {json.dumps(figures.get('bad_messages'))}")
    lines.append("  answers by phase:")
    for phase, answers in figures.get("answers_by_phase", {}).items():
        lines.append(f"    {phase:<24} {json.dumps(answers, sort_keys=True)}")
    lines.append(f"  exit status on SIGTERM     {json.dumps(figures.get('exit_status'))}")
    lines.append(f"  logs                       {figures.get('logs')}")
    return "\n".join(lines)
