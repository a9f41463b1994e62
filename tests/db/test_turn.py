"""Write turns on SQLite files (db/turn.py): processes exclude each other through the turn
file, a forked child gets a turn of its own, and two processes writing through the turn
lose nothing with SQLite's busy handler switched off (busy_timeout=0: a writer that met
the write lock taken would fail at once, so none did)."""
from __future__ import annotations

import fcntl
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from db import Database, utcnow
from db.schema import uploads
from db.turn import TurnTimeout, WriteTurn, write_turn
from tests.db.test_database import _announce, _row


def _in_child(work: Callable[[], object]) -> int:
    """Fork; the child runs ``work`` and exits 0, or 1 with its traceback. Returns the pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _exit_status(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _turn_taken_elsewhere(path: Path) -> None:
    """In a child: the turn of ``path`` cannot be taken (its own descriptor, not the
    parent's: a shared open file would not exclude the parent)."""
    fd = write_turn(path)._descriptor()
    assert fd is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    raise AssertionError("the turn was free in the child while the parent held it")


def _turn_free(path: Path) -> None:
    fd = write_turn(path)._descriptor()
    assert fd is not None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_turn_excludes_another_process_and_a_forked_child(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    turn = write_turn(path)
    assert write_turn(tmp_path / "." / "x.sqlite") is turn  # one turn per file
    with turn():
        assert (tmp_path / "x.sqlite.write-turn").exists()
        assert _exit_status(_in_child(lambda: _turn_taken_elsewhere(path))) == 0
    assert _exit_status(_in_child(lambda: _turn_free(path))) == 0


def _no_busy_handler(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=0")


def _write_many(database: Database, name: str, count: int) -> None:
    for i in range(count):
        rid = f"{name}-{i}"
        database.record_upload(_row(rid, object_key=rid), utcnow(), [_announce(rid)])
        if i % 10 == 9:  # the relay's transactions too (one of them replayable)
            database.outbox_sent(database.claim_outbox(5))
            database.outbox_sent_and_claim([], 5)


def test_two_processes_write_through_the_turn_and_never_meet_the_lock(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    try:
        database.migrate()
        database.record_upload(_row("parent", object_key="parent"), utcnow(), [])  # turn open
        event.listen(database.engine, "connect", _no_busy_handler)
        database.engine.dispose()  # no pooled connection crosses the fork
        pids = [_in_child(lambda name=name: _write_many(database, name, 150))  # type: ignore[misc]
                for name in ("a", "b")]
        assert [_exit_status(pid) for pid in pids] == [0, 0]
        with database.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(uploads)).scalar_one() == 301
    finally:
        database.close()


def test_write_turn_puts_urgent_writers_first_and_never_starves_the_relay() -> None:
    """With the turn taken, a writer that comes after a deferring one (the outbox relay)
    still writes first; with other writers waiting without end, the deferring one writes
    after at most ``MAX_DEFER``."""
    turn = WriteTurn(None)
    turn.MAX_DEFER = 600.0  # first part: the relay waits for as long as it takes
    order: list[str] = []
    holding = turn()
    holding.__enter__()

    def write(kind: str) -> None:
        with turn(deferring=kind == "deferring"):
            order.append(kind)

    relay = threading.Thread(target=write, args=("deferring",))
    relay.start()
    time.sleep(0.02)  # the relay waits for the holder
    request = threading.Thread(target=write, args=("urgent",))
    request.start()
    time.sleep(0.02)
    holding.__exit__(None, None, None)
    relay.join(5)
    request.join(5)
    assert order == ["urgent", "deferring"]

    order.clear()
    turn.MAX_DEFER = 0.05
    busy = turn()  # an urgent writer waiting all along
    busy.__enter__()
    relay = threading.Thread(target=write, args=("deferring",))
    relay.start()
    time.sleep(0.01)
    busy.__exit__(None, None, None)  # the turn is free but urgent ones keep coming
    stop = threading.Event()

    def urgent_forever() -> None:
        while not stop.is_set():
            with turn():  # one or the other is always waiting or writing
                time.sleep(0.002)
            time.sleep(0.0005)
    others = [threading.Thread(target=urgent_forever) for _ in range(2)]
    for other in others:
        other.start()
    relay.join(5)
    stop.set()
    for other in others:
        other.join(5)
    assert order == ["deferring"]


def _hold_turn_in_another_process(path: Path) -> tuple[int, int]:
    """A process that holds the turn of ``path`` until its pipe is closed; returns (pid,
    the pipe's write end). Returns once the turn is held."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            fd = os.open(f"{path}.write-turn", os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(ready_w, b"x")
            os.read(go_r, 1)  # until the parent closes its end
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return pid, go_w


def test_a_turn_held_elsewhere_times_out_then_is_taken_once_free(tmp_path: Path) -> None:
    """A writer waits at most its timeout for a turn another process holds (a stopped or
    stuck process: the others fail as SQLite's busy timeout would, never hang), and the
    turn it gave up is not kept: it is free again for the next writer at once."""
    path = tmp_path / "x.sqlite"
    turn = write_turn(path)
    pid, release = _hold_turn_in_another_process(path)
    try:
        started = time.monotonic()
        try:
            with turn(timeout=0.2):
                raise AssertionError("took a turn another process holds")
        except TurnTimeout:
            pass
        assert 0.15 < time.monotonic() - started < 5.0
        # the waiter thread still waits in flock for the given-up request
    finally:
        os.close(release)
        assert _exit_status(pid) == 0
    with turn(timeout=5.0):  # given up: released by the waiter when it came
        assert _exit_status(_in_child(lambda: _turn_taken_elsewhere(path))) == 0
    assert _exit_status(_in_child(lambda: _turn_free(path))) == 0
    # the next writer right after the holder lets go, while the waiter may still hold the
    # turn it gave up: the writer really holds it (never the waiter's about-to-go lock)
    for _ in range(20):
        pid, release = _hold_turn_in_another_process(path)
        try:
            with turn(timeout=0.01):
                raise AssertionError("took a turn another process holds")
        except TurnTimeout:
            pass
        os.close(release)
        with turn(timeout=5.0):
            time.sleep(0.002)
            assert _exit_status(_in_child(lambda: _turn_taken_elsewhere(path))) == 0
        assert _exit_status(pid) == 0


def test_database_write_fails_like_a_locked_database_when_the_turn_is_not_free(
        tmp_path: Path, monkeypatch: Any) -> None:
    import db as db_module

    monkeypatch.setattr(db_module, "TURN_TIMEOUT", 0.2)
    database = Database(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    database.migrate()
    pid, release = _hold_turn_in_another_process(tmp_path / "gateway.sqlite")
    try:
        try:
            database.record_upload(_row("r1"), utcnow(), [_announce("r1")])
            raise AssertionError("wrote while another process held the turn")
        except OperationalError as exc:
            assert "database is locked" in str(exc)
    finally:
        os.close(release)
        assert _exit_status(pid) == 0
    database.record_upload(_row("r1"), utcnow(), [_announce("r1")])
    assert database.get_upload("r1") is not None
    database.close()
