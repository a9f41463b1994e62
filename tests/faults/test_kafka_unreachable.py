"""Kafka unreachable (issue 13 item 2): ``python app.py`` with ``KAFKAMQ`` at a port where
nothing listens. The outage is logged once, then periodically; librdkafka's connection
failures are rate-limited; health answers within 100 ms, naming the bus."""
from __future__ import annotations

import collections
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import Gateway
from tests.helpers import free_port, wait_for


def health(gateway: Gateway) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(gateway.base + "/api/v1/health", timeout=10) as response:
            code, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    return code, json.loads(body), time.monotonic() - started


class DownGateway(Gateway):
    """Started once it answers at all (its health is 503: the bus is down)."""

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited:\n{self.log.read_text()[-3000:]}")
        try:
            health(self)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return True


@pytest.mark.timeout(120)
def test_unreachable_kafka_logs_the_outage_quietly_and_health_answers_fast(
        tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "KAFKAMQ": f"127.0.0.1:{free_port()}",
           "URL_SIGNING_KEY": "test"}
    gateway = DownGateway(env).start()
    try:
        assert wait_for(lambda: health(gateway)[0] == 503, 20)
        code, answer = gateway.upload(b"kept in the outbox")
        assert code == 202, answer  # a broker outage does not refuse uploads
        time.sleep(8)
        timings = []
        for _ in range(10):
            code, body, took = health(gateway)
            timings.append(took)
            assert code == 503 and "bus" in body["down"], body  # type: ignore[operator]
        assert max(timings) < 0.1, timings
    finally:
        assert gateway.stop() == 0
    lines = gateway.log.read_text().splitlines()
    librdkafka = [line for line in lines if "Connect to" in line]
    # every client (producers, consumers, admin) fails to connect many times a second: at
    # most one line per kind a minute gets through, in each process python app.py runs
    # (gateway, validators, bundler, checksummer: their lines are tagged name[pid])
    per_process = collections.Counter(re.findall(r" (\w+\[\d+\]) ", line)[0] for line in librdkafka)
    assert librdkafka and max(per_process.values()) <= 6, "\n".join(librdkafka)
    outage = [line for line in lines if "bus unavailable" in line]
    # once per process (each has its own background check), with the outbox depth
    processes = [re.findall(r" (\w+\[\d+\]) ", line)[0] for line in outage]
    assert outage and len(set(processes)) == len(processes), "\n".join(outage)
    assert all("outbox holds" in line for line in outage), "\n".join(outage)
    # four processes' start-up included; before the fix about 860 lines in 8 s
    assert len(lines) < 120, "\n".join(lines)
