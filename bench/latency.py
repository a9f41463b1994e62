"""Target 4: upload → ``platform.upload.available`` latency at a steady rate, with the
test validator answering (``python app.py``, every role in one process), on the embedded
bus and on Kafka (librdkafka's mock cluster, ``python -m bus.kafka_mock``).

    python bench/latency.py [--bus embedded|kafka|both] [--rate 100] [--seconds 20]

Each upload (10 KB, its own request id) is timed from just before its request is sent to
the moment this process consumes its message on ``platform.upload.available`` through the
same bus driver a downstream service would use. Also printed: request → 202, and the
baseline of the same run: one bare bus hop (produce → consume of a message through the
same driver, at the same rate). The path to "available" has three bus hops (announcement,
verdict, available) plus the validator's HTTP fetch of the payload.
"""
from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, banner, percentile, remove_workdir, small_body, start_gateway, temp_workdir

from bus import OutMessage, get_bus
from core.settings import Settings

AVAILABLE = "platform.upload.available"
HOP_TOPIC = "bench.latency.hop"
TOPICS = ["platform.upload.testareno", "platform.upload.validation", AVAILABLE,
          "platform.payload-status", "platform.asset-transfer", HOP_TOPIC]


class Collector(threading.Thread):
    """Consumes ``topic`` and notes when each key (request id) arrives."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.bus = get_bus(settings)
        self.consumer = self.bus.consumer(f"bench-{time.monotonic_ns()}", [topic])
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                message = self.consumer.poll(0.05)
                self.ready.set()
                if message is None:
                    continue
                now = time.perf_counter()
                key = json.loads(message.value).get("request_id")
                if key is not None:
                    self.seen.setdefault(key, now)
                self.consumer.commit(message)
        finally:
            self.consumer.close()
            self.bus.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def steady(rate: float, seconds: float, send: Any) -> dict[str, float]:
    """Call ``send(i)`` at ``rate`` per second from a pool; returns id → send time."""
    sent: dict[str, float] = {}
    with ThreadPoolExecutor(32) as pool:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, i, sent)
    return sent


class Uploader:
    def __init__(self, base: str, prefix: str) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.prefix = prefix
        self.body, self.ctype = small_body(10_000)
        self.local = threading.local()
        self.accepted: list[float] = []
        self.failures = 0
        self.batch = 0

    def __call__(self, i: int, sent: dict[str, float]) -> None:
        request_id = f"{self.prefix}-{self.batch}-{i}"
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        started = time.perf_counter()
        sent[request_id] = started
        try:
            conn.request("POST", "/api/v1/upload", body=self.body, headers={
                "Content-Type": self.ctype, "x-rh-insights-request-id": request_id})
            response = conn.getresponse()
            response.read()
            ok = response.status == 202
        except OSError:
            self.local.conn = None
            ok = False
        if ok:
            self.accepted.append(time.perf_counter() - started)
        else:
            self.failures += 1
            sent.pop(request_id, None)


def report(name: str, sent: dict[str, float], seen: dict[str, float]) -> str:
    latencies = [1000 * (seen[k] - t) for k, t in sent.items() if k in seen]
    missing = len(sent) - len(latencies)
    return (f"{name}: p50 {percentile(latencies, 50):6.1f} ms  p99 {percentile(latencies, 99):6.1f} ms"
            f"  max {max(latencies, default=float('nan')):6.1f} ms  ({len(latencies)} of "
            f"{len(sent)}{f', {missing} MISSING' if missing else ''})")


def wait_all(sent: dict[str, float], seen: dict[str, float], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(k in seen for k in sent):
        time.sleep(0.1)


def bus_hop(settings: Settings, rate: float, seconds: float) -> str:
    collector = Collector(settings, HOP_TOPIC)
    collector.start()
    collector.ready.wait(30)
    time.sleep(2 if settings.kafka_servers else 0.2)  # let the consumer get its partition
    bus = get_bus(settings)
    producer = bus.producer()
    lock = threading.Lock()

    def send(i: int, sent: dict[str, float]) -> None:
        key = f"hop-{i}"
        sent[key] = time.perf_counter()
        with lock:  # one producer, as the relay has
            producer.send([OutMessage(HOP_TOPIC, key, json.dumps({"request_id": key}).encode())], 10)

    sent = steady(rate, seconds, send)
    wait_all(sent, collector.seen)
    collector.stop()
    producer.close()
    bus.close()
    return report("baseline, one bare bus hop  ", sent, collector.seen)


def run(kind: str, rate: float, seconds: float, role: list[str] | None = None) -> None:
    workdir = temp_workdir(f"latency-{kind}")
    env: dict[str, str] = {}
    mock = None
    if kind == "kafka":
        mock = subprocess.Popen([sys.executable, "-m", "bus.kafka_mock", *TOPICS], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert mock.stdout is not None
        env["KAFKAMQ"] = mock.stdout.readline().strip()
    gateway = start_gateway(workdir, env, role=role)
    kind = kind + (" " + " ".join(role) if role else "")
    try:
        settings = Settings.from_env({"WORKDIR": str(workdir), **env})
        collector = Collector(settings, AVAILABLE)
        collector.start()
        collector.ready.wait(30)
        uploader = Uploader(gateway.base, f"lat{time.monotonic_ns()}")
        warm = steady(rate, 2, uploader)  # warm-up (and Kafka group joins)
        wait_all(warm, collector.seen)
        uploader.accepted.clear()
        uploader.failures = 0
        uploader.batch = 1
        sent = steady(rate, seconds, uploader)
        wait_all(sent, collector.seen)
        collector.stop()
        print(f"[{kind}] {len(sent)} uploads at {rate:.0f}/s; failures {uploader.failures}")
        print(f"[{kind}] upload -> available      : " + report("", sent, collector.seen)[2:]
              + f"  (target p99 <= {50 if kind.startswith('embedded') else 100} ms)")
        print(f"[{kind}] request -> 202           :  p50 "
              f"{1000 * percentile(uploader.accepted, 50):6.1f} ms  p99 "
              f"{1000 * percentile(uploader.accepted, 99):6.1f} ms")
        print(f"[{kind}] " + bus_hop(settings, rate, min(seconds, 10)))
    finally:
        gateway.stop()
        if mock is not None:
            mock.terminate()
            mock.wait(10)
        remove_workdir(workdir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bus", default="both", choices=["embedded", "kafka", "both"])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--compare-one-process", action="store_true",
                        help="also run python app.py --one-process (every role in one process)")
    args = parser.parse_args()
    banner(f"latency upload -> available at {args.rate:.0f} uploads/s, test validator answering")
    for kind in (["embedded", "kafka"] if args.bus == "both" else [args.bus]):
        run(kind, args.rate, args.seconds)
        if args.compare_one_process:
            run(kind, args.rate, args.seconds, ["all", "--one-process"])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
