"""Issue 6, item 9: SIGTERM stops accepting, lets in-flight uploads finish within
``SHUTDOWN_GRACE``, flushes the outbox relay and the Kafka producer, and exits 0; idle and
body timeouts (``HTTP_IDLE_TIMEOUT``, ``HTTP_BODY_TIMEOUT``) cut off slow clients and
remove their partial uploads.

(tests/test_e2e_embedded.py has the basic case: one slow upload finishing after SIGTERM on
the embedded bus; these extend it.)"""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from bus.kafka import KafkaBus
from bus.kafka_mock import MockKafkaCluster
from bus.topics import all_topics
from core.settings import Settings
from tests.e2e import Gateway
from tests.faults.tools import bucket_files, port_open, run_concurrently, upload, uploads_table
from tests.helpers import CT_TESTARENO, wait_for


def incomplete(settings: Settings) -> list[Path]:
    return [p for b in settings.buckets.values() for p in bucket_files(settings.workdir, b)[1]]


def open_upload(port: int, declared: int, first: bytes) -> socket.socket:
    """A raw upload connection that has sent its headers and ``first`` of the body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /api/v1/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary=b0undary\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    sock.sendall(head + first)
    return sock


def first_part(size: int) -> bytes:
    """The start of a file part with ``size`` bytes. Callers send more than the ingest
    path's 1 MiB block, so that the object exists in quarantine."""
    return (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n"
            b"Content-Type: " + CT_TESTARENO.encode() + b"\r\n\r\n" + b"x" * size)


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closes ``sock`` (reads and drops what it sends)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < within:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


@pytest.fixture
def own_kafka() -> Iterator[MockKafkaCluster]:
    """A mock cluster of this test's own: its announcements name a gateway that is gone
    afterwards, and on the session's cluster they held the validator workers of later
    tests (a payload fetch that fails is retried until its VALIDATION_TIMEOUT)."""
    cluster = MockKafkaCluster().start(brokers=1)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.kafka
def test_sigterm_finishes_inflight_uploads_flushes_kafka_and_exits_zero(
        tmp_path: Path, own_kafka: MockKafkaCluster) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "KAFKAMQ": own_kafka.bootstrap}
    settings = Settings.from_env(env)
    for topic in all_topics(settings):
        own_kafka.create_topic(topic)
    gateway = Gateway(env, ["gateway"]).start()
    assert gateway.process is not None
    results: list = []

    def job(index: int):  # type: ignore[no-untyped-def]
        # about 2.5 s per upload: still streaming when SIGTERM arrives
        return upload(gateway.port, bytes([65 + index]) * 250_000, index,
                      request_id=f"term-{index}-{tmp_path.name[-8:]}", chunk=10_000, pause=0.1)

    runner = threading.Thread(target=lambda: results.extend(run_concurrently(10, 10, job)))
    runner.start()
    time.sleep(0.8)
    gateway.process.send_signal(signal.SIGTERM)
    assert wait_for(lambda: not port_open(gateway.port), 5), "still accepting after SIGTERM"
    runner.join(30)
    assert [r.status for r in results] == [202] * 10, results
    assert gateway.process.wait(30) == 0
    # the process is gone: every announcement must be on Kafka already (outbox + producer
    # flushed at stop), without a restart
    wanted = {r.request_id for r in results}
    consumer = KafkaBus(settings, session_timeout=1.0).consumer(
        f"sigterm-{time.monotonic_ns()}", ["platform.upload.testareno"])
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    try:
        while not wanted <= seen and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                seen.add(json.loads(message.value)["request_id"])
    finally:
        consumer.close()
    assert wanted <= seen, wanted - seen
    rows = uploads_table(settings.workdir)
    assert all(rows[rid]["status"] == "announced" for rid in wanted)


def test_sigterm_grace_runs_out_on_a_stalled_upload(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "SHUTDOWN_GRACE": "2"}
    settings = Settings.from_env(env)
    gateway = Gateway(env, ["gateway"]).start()
    assert gateway.process is not None
    stalled = open_upload(gateway.port, 8_000_000, first_part(3_000_000))
    try:
        assert wait_for(lambda: incomplete(settings), 5), "the upload did not start"
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(20) == 0
        took = time.monotonic() - started
        assert 1.5 < took < 10, took
    finally:
        stalled.close()
    restarted = Gateway({**env, "LISTEN_PORT": str(gateway.port)}, ["gateway"]).start()
    try:
        assert wait_for(lambda: not incomplete(settings), 10), "partial upload left behind"
        assert not uploads_table(settings.workdir)
    finally:
        assert restarted.stop() == 0


def test_idle_and_slow_header_connections_are_closed(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "HTTP_IDLE_TIMEOUT": "1"}
    gateway = Gateway(env, ["gateway"]).start()
    try:
        idle = socket.create_connection(("127.0.0.1", gateway.port))
        took = closed_by_server(idle, 10)
        assert took is not None and took < 5, took
        idle.close()
        # slow loris: headers trickle in, a byte at a time
        loris = socket.create_connection(("127.0.0.1", gateway.port))
        loris.sendall(b"POST /api/v1/upload HTTP/1.1\r\n")
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 10:
            try:
                loris.sendall(b"X")
            except OSError:
                cut = True
                break
            time.sleep(0.1)
        assert cut or closed_by_server(loris, 1) is not None
        assert time.monotonic() - started < 6
        loris.close()
        # a keep-alive connection left idle after a request is closed too
        conn = socket.create_connection(("127.0.0.1", gateway.port))
        conn.sendall(b"GET /api/v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        took = closed_by_server(conn, 10)
        assert took is not None and took < 5, took
        conn.close()
        assert upload(gateway.port, b"still serving").status == 202
    finally:
        assert gateway.stop() == 0


def test_slow_body_is_cut_off_and_its_partial_upload_removed(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "HTTP_BODY_TIMEOUT": "2"}
    settings = Settings.from_env(env)
    gateway = Gateway(env, ["gateway"]).start()
    assert gateway.process is not None
    try:
        slow = open_upload(gateway.port, 8_000_000, first_part(3_000_000))
        assert wait_for(lambda: incomplete(settings), 5), "the upload did not start"
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 15:
            try:
                slow.sendall(b"y" * 100)
            except OSError:
                cut = True
                break
            time.sleep(0.2)
        assert cut or closed_by_server(slow, 1) is not None, "slow body not cut off"
        assert time.monotonic() - started < 8
        slow.close()
        assert wait_for(lambda: not incomplete(settings), 5), "partial upload left behind"
        assert not list(settings.workdir.joinpath(settings.s3_quarantine).glob("[!.]*"))
        assert not uploads_table(settings.workdir)
        # a fast client in the meantime is fine, and the cut upload is no longer in flight:
        # SIGTERM stops at once instead of waiting out the grace period
        assert upload(gateway.port, b"fast enough").status == 202
        started = time.monotonic()
        assert gateway.stop() == 0
        assert time.monotonic() - started < 10
    finally:
        if gateway.process and gateway.process.poll() is None:
            gateway.stop()


def test_bad_timeout_settings_stop_start_up() -> None:
    from core.settings import SettingsError

    for name in ("HTTP_IDLE_TIMEOUT", "HTTP_BODY_TIMEOUT", "SHUTDOWN_GRACE"):
        for bad in ("soon", "0", "-1"):
            with pytest.raises(SettingsError, match=name):
                Settings.from_env({"WORKDIR": "/tmp/unused-settings-check",
                                   "URL_SIGNING_KEY": "k", name: bad})
    settings = Settings.from_env({"WORKDIR": "/tmp/unused-settings-check", "URL_SIGNING_KEY": "k"})
    assert (settings.http_idle_timeout, settings.http_body_timeout,
            settings.shutdown_grace) == (60.0, 600.0, 30.0)
