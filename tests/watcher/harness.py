"""An in-process watcher on its own asyncio loop in a thread, so that a test can write files
from its own thread (slowly, with renames, in bursts) while real watchdog observers run."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator

from bus import Consumer, get_bus
from core.services import Services
from core.settings import Settings
from watcher.service import Watcher

RULES = ("*.obj=assets/obj:gzip,*.obj.gz=assets/obj:gunzip:gzip,*.txt=testareno/lab,"
         "tars/=testareno/tar:untar,*.gpg=testareno/secret:decrypt:gunzip")


def watch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"WORKDIR": str(tmp_path / "work"), "WATCH_DIR": str(tmp_path / "drop"),
            "WATCH_QUIET_SECONDS": "0.3", "WATCH_RULES": RULES,
            "URL_SIGNING_KEY": "test", **extra}


class Harness:
    def __init__(self, env: dict[str, str]) -> None:
        self.settings = Settings.from_env(env)
        root = self.settings.watch_dir
        assert root is not None
        root.mkdir(parents=True, exist_ok=True)  # the watcher never creates WATCH_DIR
        self.root: Path = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.services: Services | None = None
        self.watcher: Watcher | None = None

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Harness:
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.services = Services.build(self.settings)
        self.services.relay.start()
        self.watcher = Watcher(self.services)
        await self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.call(self.watcher.stop())
        if self.services is not None:
            self.services.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def processed(self) -> Path:
        return self.root / "Processed"

    @property
    def failed(self) -> Path:
        return self.root / "Failed"

    def files(self, folder: Path) -> list[str]:
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def uploads(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from db.schema import uploads
        assert self.services is not None
        with self.services.database.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(uploads)).mappings()]


def drain(consumer: Consumer, idle: float = 1.0, limit: float = 30) -> list[dict[str, Any]]:
    """Every message until none came for ``idle`` seconds."""
    found: list[dict[str, Any]] = []
    deadline, quiet_until = time.monotonic() + limit, time.monotonic() + idle
    while time.monotonic() < min(deadline, quiet_until):
        message = consumer.poll(0.1)
        if message is None:
            continue
        consumer.commit(message)
        found.append({"topic": message.topic, **json.loads(message.value)})
        quiet_until = time.monotonic() + idle
    return found


def read_topics(settings: Settings, topics: list[str], until: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 30) -> list[dict[str, Any]]:
    """Messages of ``topics`` from the start, until ``until(messages)`` holds (or timeout)."""
    bus = get_bus(settings)
    consumer = bus.consumer(f"watcher-test-{time.monotonic_ns()}", topics)
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(found) and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None:
                consumer.commit(message)
                found.append({"topic": message.topic, **json.loads(message.value)})
        return found
    finally:
        consumer.close()
        bus.close()


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text().splitlines()
