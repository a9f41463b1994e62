"""The health monitor (core/health.py) and the quieter of repeated log lines (bus/quiet.py)."""
from __future__ import annotations

import logging
import time

import pytest

from bus.quiet import Quieter
from core.health import HealthMonitor, duration
from tests.helpers import wait_for


def test_an_outage_is_logged_once_then_periodically_then_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    broken = {"bus": True}

    def bus() -> None:
        if broken["bus"]:
            raise ConnectionError("no broker")

    monitor = HealthMonitor({"bus": bus, "storage": lambda: None}, lambda: 42,
                            interval=0.05, log_every=0.5)
    with caplog.at_level(logging.INFO, logger="core.health"):
        monitor.start()
        try:
            assert monitor.first.wait(5)
            assert monitor.down() == {"bus": "no broker"}
            time.sleep(1.2)
            broken["bus"] = False
            assert wait_for(lambda: not monitor.down(), 5)
            time.sleep(0.2)
        finally:
            monitor.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "bus unavailable: no broker; the outbox holds 42 messages for it"
    periodic = lines[1:-1]
    # 1.2 s down, reported every 0.5 s: about twice more, never each check (every 0.05 s)
    assert 1 <= len(periodic) <= 3, lines
    assert all(line.startswith("bus unavailable for ") and "holds 42" in line
               for line in periodic), lines
    assert lines[-1].startswith("bus available again after "), lines


def test_a_check_that_hangs_is_down_once_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.health.STALE", 0.2)
    calls = []

    def hangs() -> None:
        calls.append(1)
        if len(calls) > 1:
            time.sleep(5)

    monitor = HealthMonitor({"database": hangs}, interval=0.05)
    monitor.start()
    try:
        assert monitor.first.wait(5) and monitor.down() == {}
        assert wait_for(lambda: "no answer for" in monitor.down().get("database", ""), 5)
    finally:
        monitor.stop()


def test_durations_read_well() -> None:
    assert [duration(s) for s in (1.25, 95, 3725)] == ["1.2s", "1m35s", "1h02m"]


def test_repeated_lines_are_let_through_once_a_minute() -> None:
    quieter = Quieter(every=60)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("bus.kafka.librdkafka", logging.ERROR, __file__, 1, message,
                                 (), None)

    first = record("FAIL [rdkafka#producer-8] 127.0.0.1:1: Connect failed (after 0ms)")
    assert quieter.filter(first)
    same = [record(f"FAIL [rdkafka#consumer-{n}] 127.0.0.1:1: Connect failed (after {n}ms)")
            for n in range(50)]
    assert not any(quieter.filter(r) for r in same)
    assert quieter.filter(record("something else"))
    quieter._seen = {k: (v[0] - 61, v[1]) for k, v in quieter._seen.items()}
    later = record("FAIL [rdkafka#producer-8] 127.0.0.1:1: Connect failed (after 3ms)")
    assert quieter.filter(later)
    assert later.getMessage().endswith("(50 like it in the last 61s not logged)")
