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

from db import Database, utcnow
from db.schema import uploads
from db.turn import WriteTurn, write_turn
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
