"""Issue 12 item 2: five roles (real ``python app.py ROLE`` processes) started at the same
moment on a fresh PostgreSQL database all come up: the migrations run once, under a lock,
instead of racing to create ``alembic_version`` (UniqueViolation, exit 1). Repeated."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from bus.kafka_mock import MockKafkaCluster
from db import Database
from tests.fixtures.db import PG_ADMIN_URL
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
ROLES = [["gateway"], ["gateway"], ["validator", "testareno"], ["validator", "obj"], ["bundler"]]
READY = {"gateway": "gateway listening", "validator": "running", "bundler": "bundler running"}
ROUNDS = 3


@pytest.fixture
def fresh_databases() -> Iterator[list[str]]:
    """``ROUNDS`` empty databases (dropped afterwards)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"gw_start_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield [f"{base}/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def start_all(workdir: Path, env: dict[str, str]) -> list[tuple[subprocess.Popen[bytes], Path]]:
    started = []
    for number, role in enumerate(ROLES):
        log = workdir / f"{number}-{'-'.join(role)}.log"
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *role], cwd=ROOT,
            env={**env, "LISTEN_PORT": str(free_port())}, stdout=log.open("wb"),
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append((process, log))
    return started


@pytest.mark.postgres
@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_five_roles_started_at_once_on_a_fresh_database_all_come_up(
        tmp_path: Path, fresh_databases: list[str]) -> None:
    # a mock cluster of its own: the validators started here would read (and hold) what
    # other tests left on the session cluster's topics
    cluster = MockKafkaCluster().start(brokers=1)
    try:
        start_rounds(tmp_path, fresh_databases, cluster.bootstrap)
    finally:
        cluster.close()


def start_rounds(tmp_path: Path, fresh_databases: list[str], kafka_bootstrap: str) -> None:
    for round_number, url in enumerate(fresh_databases):
        workdir = tmp_path / f"round{round_number}"
        workdir.mkdir()
        env = {**os.environ, "WORKDIR": str(workdir), "DATABASE_URL": url,
               "KAFKAMQ": kafka_bootstrap}
        processes = start_all(workdir, env)
        try:
            def all_ready(processes: list = processes) -> bool:  # type: ignore[type-arg]
                for process, log in processes:
                    text_ = log.read_text(errors="replace")
                    assert process.poll() is None, f"{log.name} exited:\n{text_[-3000:]}"
                    if READY[log.stem.split("-")[1]] not in text_:
                        return False
                return True

            assert wait_for(all_ready, timeout=90, interval=0.2), [
                log.read_text()[-1500:] for _, log in processes]
            time.sleep(1.0)  # the signal handlers are set right after the ready lines
            assert all(process.poll() is None for process, _ in processes)
        finally:
            for process, _ in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            codes = [process.wait(60) for process, _ in processes]
        logs = {log.name: log.read_text(errors="replace") for _, log in processes}
        assert codes == [0] * len(ROLES), (codes, logs)
        assert not [name for name, text_ in logs.items() if "Traceback" in text_], logs


@pytest.mark.parametrize("round_number", range(3))
def test_concurrent_migrations_on_a_fresh_sqlite_file(tmp_path: Path, round_number: int) -> None:
    """SQLite's DDL commits on its own: the migrations take a file lock instead."""
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def migrate() -> None:
        database = Database(url)
        try:
            barrier.wait()
            database.migrate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=migrate) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    database = Database(url)
    assert database.outbox_depth() == 0
    database.close()


def test_an_unreachable_database_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "gateway"], cwd=ROOT, capture_output=True,
        timeout=60, env={**os.environ, "WORKDIR": str(tmp_path),
                         "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/none"})
    assert done.returncode == 1
    assert b"database error: database schema upgrade failed" in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr
