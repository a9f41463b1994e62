"""The embedded SQLite bus: the contract, plus what only a shared file brings."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from bus import BusUnavailable, OutMessage, get_bus
from bus.local import LocalBus
from core.settings import Settings
from tests.contracts.bus_contract import BusContract, consume, group_name, send_all, values

ROOT = Path(__file__).resolve().parents[2]

PRODUCER_SCRIPT = """
import sys
from bus import OutMessage
from bus.local import LocalBus
from core.settings import Settings

workdir, name = sys.argv[1], sys.argv[2]
bus = LocalBus(Settings.from_env({"WORKDIR": workdir}))
producer = bus.producer()
for start in range(0, 500, 10):
    batch = [OutMessage("shared", name, f"{name}-{i}".encode()) for i in range(start, start + 10)]
    assert producer.send(batch, 10.0) == [True] * 10
producer.close()
bus.close()
"""


TURN_SCRIPT = """
import sys
from bus import OutMessage
from bus.local import LocalBus
from core.settings import Settings

workdir, name = sys.argv[1], sys.argv[2]
bus = LocalBus(Settings.from_env({"WORKDIR": workdir}))
producer = bus.producer()
for i in range(300):  # timeout 1 ms: SQLite's busy handler sleeps 1 ms once, then fails
    assert producer.send([OutMessage("shared", name, f"{name}-{i}".encode())], 0.001) == [True]
producer.close()
bus.close()
"""


def local_settings(workdir: Path) -> Settings:
    return Settings.from_env({"WORKDIR": str(workdir)})


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalBus]:
    local = LocalBus(local_settings(tmp_path))
    yield local
    local.close()


@pytest.fixture
def topic() -> str:
    return f"topic-{uuid.uuid4().hex[:8]}"


class TestLocalBusContract(BusContract):
    pass


def test_selected_without_kafkamq(tmp_path: Path) -> None:
    selected = get_bus(local_settings(tmp_path))
    assert isinstance(selected, LocalBus)
    assert selected.path == tmp_path / "bus.sqlite"
    selected.close()


def test_two_processes_producing_at_once_lose_nothing(bus: LocalBus, tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", PRODUCER_SCRIPT, str(tmp_path), name],
                              cwd=ROOT) for name in ("p1", "p2")]
    assert [proc.wait(30) for proc in procs] == [0, 0]
    received = consume(bus, group_name(), ["shared"], 1000, timeout=10)
    assert len(received) == 1000
    for name in ("p1", "p2"):
        expected = [f"{name}-{i}".encode() for i in range(500)]
        assert [m.value for m in received if m.key == name] == expected


def test_two_processes_take_turns_without_meeting_the_lock(bus: LocalBus, tmp_path: Path) -> None:
    """Writers of two processes take turns on ``bus.sqlite.write-turn`` (db/turn.py), so
    with a 1 ms busy timeout, where meeting the other's write lock would fail the send,
    all 600 single-message transactions commit."""
    procs = [subprocess.Popen([sys.executable, "-c", TURN_SCRIPT, str(tmp_path), name],
                              cwd=ROOT) for name in ("p1", "p2")]
    assert [proc.wait(30) for proc in procs] == [0, 0]
    assert (tmp_path / "bus.sqlite.write-turn").exists()
    received = consume(bus, group_name(), ["shared"], 600, timeout=10)
    for name in ("p1", "p2"):
        assert [m.value for m in received if m.key == name] == [
            f"{name}-{i}".encode() for i in range(300)]


def test_survives_close_and_reopen(tmp_path: Path, topic: str) -> None:
    first = LocalBus(local_settings(tmp_path))
    send_all(first, [OutMessage(topic, "k", b"kept")])
    group = group_name()
    assert values(consume(first, group, [topic], 1, commit_upto=0)) == [b"kept"]
    first.close()
    second = LocalBus(local_settings(tmp_path))
    assert values(consume(second, group, [topic], 1, commit_upto=1)) == [b"kept"]
    send_all(second, [OutMessage(topic, "k", b"next")])
    assert values(consume(second, group, [topic], 1)) == [b"next"]
    second.close()


def test_one_active_member_per_group(bus: LocalBus, topic: str) -> None:
    group = group_name()
    send_all(bus, [OutMessage(topic, "k", b"a"), OutMessage(topic, "k", b"b")])
    first, second = bus.consumer(group, [topic]), bus.consumer(group, [topic])
    assert first.poll(1.0).value == b"a"  # type: ignore[union-attr]
    assert second.poll(0.3) is None
    first.commit(first.poll(1.0))  # type: ignore[arg-type]
    first.close()
    assert second.poll(0.3) is None  # everything committed
    send_all(bus, [OutMessage(topic, "k", b"c")])
    assert second.poll(1.0).value == b"c"  # type: ignore[union-attr]
    second.close()


def test_lease_expires_when_member_stops_polling(tmp_path: Path, topic: str) -> None:
    bus = LocalBus(local_settings(tmp_path), lease_seconds=0.3)
    group = group_name()
    send_all(bus, [OutMessage(topic, "k", b"a"), OutMessage(topic, "k", b"b")])
    stuck, other = bus.consumer(group, [topic]), bus.consumer(group, [topic])
    assert stuck.poll(1.0).value == b"a"  # type: ignore[union-attr]
    started = time.monotonic()
    assert other.poll(2.0).value == b"a"  # type: ignore[union-attr]
    assert time.monotonic() - started >= 0.2
    assert stuck.poll(0.2) is None  # its lease was taken over: what it fetched is dropped
    stuck.close()
    other.close()
    bus.close()


def test_send_raises_bus_unavailable_when_locked(bus: LocalBus, topic: str) -> None:
    blocker = sqlite3.connect(bus.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    producer = bus.producer()
    try:
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            producer.send([OutMessage(topic, "k", b"x")], 0.2)
        assert time.monotonic() - started < 2
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert producer.send([OutMessage(topic, "k", b"x")], 1.0) == [True]
    producer.close()


def test_idle_poll_sees_a_message_quickly(bus: LocalBus, topic: str) -> None:
    consumer = bus.consumer(group_name(), [topic])
    producer = bus.producer()
    latencies: list[float] = []

    def poll_loop() -> None:
        while len(latencies) < 10:
            message = consumer.poll(1.0)
            if message is not None:
                latencies.append(time.time() - float(message.value))
    thread = threading.Thread(target=poll_loop)
    thread.start()
    for _ in range(10):
        time.sleep(0.15)  # let the consumer back off to its slowest step
        producer.send([OutMessage(topic, "k", repr(time.time()).encode())], 1.0)
    thread.join(10)
    producer.close()
    consumer.close()
    assert len(latencies) == 10
    assert sorted(latencies)[-2] < 0.1, latencies


def test_send_wakes_an_idle_poll_of_the_same_process(bus: LocalBus, topic: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A send notifies the idle polls of its topic in this process: with the poll
    interval stretched to minutes the message still arrives (and one to another topic
    does not end the wait)."""
    monkeypatch.setattr("bus.local.MIN_IDLE_SLEEP", 600.0)
    monkeypatch.setattr("bus.local.MAX_IDLE_SLEEP", 600.0)
    consumer = bus.consumer(group_name(), [topic])
    assert consumer.poll(0.05) is None  # takes the lease
    producer = bus.producer()
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(consumer.poll(60.0)))
    thread.start()
    time.sleep(0.2)
    producer.send([OutMessage(f"{topic}-other", "k", b"elsewhere")], 1.0)
    time.sleep(0.2)
    assert thread.is_alive()
    producer.send([OutMessage(topic, "k", b"here")], 1.0)
    thread.join(30)
    assert not thread.is_alive() and [m.value for m in got] == [b"here"]  # type: ignore[attr-defined]
    producer.close()
    consumer.close()


def test_retention_prunes_only_old_messages_every_group_has_done(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time as clock

    from bus import OutMessage
    from bus.local import LocalBus
    from core.settings import Settings

    bus = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path), "BUS_RETENTION_HOURS": "0.0001"}))
    producer = bus.producer()
    producer.send([OutMessage("read", "k", b"%d" % n) for n in range(3)], 5)
    producer.send([OutMessage("unread", "k", b"x")], 5)
    fast, slow = bus.consumer("fast", ["read"]), bus.consumer("slow", ["read"])
    for _ in range(3):
        message = fast.poll(1)
        assert message is not None
        fast.commit(message)
    first = slow.poll(1)
    assert first is not None
    slow.commit(first)  # the slow group has done only the first message
    clock.sleep(0.5)  # every message is now older than the 0.36 s retention
    assert producer.prune() == 2  # "read" #1, done by both groups; "unread": no group reads it
    for message in (slow.poll(1), slow.poll(1)):
        assert message is not None  # what the slow group has not done is still there
    for consumer in (fast, slow):
        consumer.close()
    producer.close()
    bus.close()


SEND_ONE_SCRIPT = """
import sys
from bus import OutMessage
from bus.local import LocalBus
from core.settings import Settings

bus = LocalBus(Settings.from_env({"WORKDIR": sys.argv[1]}))
producer = bus.producer()
assert producer.send([OutMessage(sys.argv[2], "k", b"from another process")], 10.0) == [True]
producer.close()
bus.close()
"""


def test_send_wakes_an_idle_poll_of_another_process(tmp_path: Path, topic: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The doorbell (bus/doorbell.py): with the poll interval stretched to minutes, a
    message another process sends still arrives at once. The work directory's path is
    longer than a socket address may be, so the doorbells are reached through
    /proc/self/fd."""
    monkeypatch.setattr("bus.local.MIN_IDLE_SLEEP", 600.0)
    monkeypatch.setattr("bus.local.MAX_IDLE_SLEEP", 600.0)
    workdir = tmp_path / ("deep-" + "d" * 120)
    bus = LocalBus(local_settings(workdir))
    consumer = bus.consumer(group_name(), [topic])
    assert consumer.poll(0.05) is None  # takes the lease
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(consumer.poll(60.0)))
    thread.start()
    time.sleep(0.2)
    subprocess.run([sys.executable, "-c", SEND_ONE_SCRIPT, str(workdir), topic], cwd=ROOT,
                   check=True, timeout=60)
    thread.join(30)
    assert not thread.is_alive() and [m.value for m in got] == [b"from another process"]  # type: ignore[attr-defined]
    bells = workdir / "bus.sqlite.bells"
    assert len(list(bells.iterdir())) == 1  # this process's; the sender did not listen
    consumer.close()
    assert list(bells.iterdir()) == []  # the last consumer's close removes it
    bus.close()


def test_doorbell_removes_dead_sockets_and_ignores_garbage(tmp_path: Path, topic: str) -> None:
    """A socket left by a process that died is removed by the next ring; a datagram that
    is not topic names wakes nobody and stops nothing."""
    import socket

    bus = LocalBus(local_settings(tmp_path))
    consumer = bus.consumer(group_name(), [topic])
    bells = tmp_path / "bus.sqlite.bells"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(bells / "999999-dead.bell"))
    dead.close()  # bound, then gone: nobody reads it
    (listening,) = [p for p in bells.iterdir() if p.name != "999999-dead.bell"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(b"\xff\xfe not utf-8", str(listening))
    producer = bus.producer()
    producer.send([OutMessage(topic, "k", b"v")], 1.0)
    assert [p.name for p in bells.iterdir()] == [listening.name]
    assert any(t.name == "bus-doorbell" for t in threading.enumerate())  # it lived on
    message = consumer.poll(5.0)
    assert message is not None and message.value == b"v"
    producer.close()
    consumer.close()
    bus.close()


MEMBER_SCRIPT = """
import sys, time
from bus.local import LocalBus
from core.settings import Settings

bus = LocalBus(Settings.from_env({"WORKDIR": sys.argv[1]}))
consumer = bus.consumer(sys.argv[2], [sys.argv[3]])
message = consumer.poll(10.0)
print(consumer.owner, message.value.decode(), flush=True)
time.sleep(600)  # holds the lease (10 s, renewed by nothing) until it is killed
"""


def test_a_killed_members_lease_is_taken_at_once(bus: LocalBus, tmp_path: Path,
                                                 topic: str) -> None:
    """A member SIGKILLed while it holds its group's lease (a gateway killed between two
    polls of its verdict loop) does not hold the group for the 10 s lease: its locked file
    (bus/liveness.py) is free, and the next member takes the lease at its next look. A live
    member's lease is never taken."""
    group = group_name()
    send_all(bus, [OutMessage(topic, "k", b"a"), OutMessage(topic, "k", b"b")])
    process = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, str(tmp_path), group, topic],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    other = bus.consumer(group, [topic])
    try:
        assert process.stdout is not None
        owner, value = process.stdout.readline().split()
        assert value == "a" and (Path(f"{bus.path}.members") / owner).exists()
        assert other.poll(0.6) is None  # alive: the lease is its own
        process.kill()
        process.wait(10)
        started = time.monotonic()
        message = other.poll(5.0)
        assert message is not None and message.value == b"a"  # from the committed offset
        assert time.monotonic() - started < 2.0  # not the 10 s lease
        assert not (Path(f"{bus.path}.members") / owner).exists()  # the gone one's file
    finally:
        other.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert list(Path(f"{bus.path}.members").iterdir()) == []  # closed: its own file too
