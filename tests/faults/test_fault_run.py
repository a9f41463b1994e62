"""Issue 10, "Proof": the fault run (tests/faults/fault_run.py) with short phases. Two
gateways, two validators and a bundler (``python app.py ROLE``) on the mock Kafka cluster,
moto behind a fault proxy and PostgreSQL behind a TCP proxy, under a steady load of
multipart uploads while S3, the brokers and PostgreSQL are cut in turn (10 s each here,
30 s in ``python bench/fault_run.py``), a gateway is SIGKILLed and restarted, and an
oversized verdict and 100 malformed messages are published. Every 202'd upload ends
``available`` (or ``rejected`` by its check), none lost, none rejected by the timeout, no
duplicate on ``platform.upload.available``, every perm object's sha256 the client's."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.fault_run import Phases, problems, report, run

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.s3, pytest.mark.postgres]


@pytest.mark.timeout(300)
def test_fault_run_keeps_every_202(tmp_path: Path) -> None:
    phases = Phases(warmup=5, cut=10, gap=5, tail=5, clients=3, rate=4, drain=90,
                    validation_timeout=600)
    figures = run(phases, tmp_path / "run")
    print("\n" + report(figures))
    assert not problems(figures), problems(figures)
