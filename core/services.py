"""Wiring: the storage, database, bus, thread pool, ingest path and outbox relay that one
process shares between its roles."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Coroutine

from bus import Bus, get_bus
from core.health import HealthMonitor
from core.ingest import Ingestor
from core.relay import OutboxRelay
from core.resumable import Resumable
from core.settings import Settings
from db import Database
from storage import Storage, get_storage, resumable

logger = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings, storage: Storage, database: Database, bus: Bus) -> None:
        self.settings = settings
        self.storage = storage
        self.database = database
        self.bus = bus
        self.executor = ThreadPoolExecutor(settings.upload_threads, thread_name_prefix="io")
        self.relay = OutboxRelay(database, bus)
        self.ingestor = Ingestor(settings, storage, database, self.executor, self.relay.wake)
        # tus needs the storage's resumable capability, checked once here
        appendable = resumable(storage)
        self.resumable = (Resumable(self.ingestor, appendable, self.relay.wake)
                          if appendable is not None else None)
        # started by serve() (and by the first health request): health answers from it
        self.health = HealthMonitor({"storage": storage.check, "database": database.check,
                                     "bus": bus.check}, database.outbox_depth)
        # services with no validator in this all-in-one process (shown on health)
        self.without_validator: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.inflight = 0  # uploads being received; a graceful stop waits for them

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.database_url)
        database.migrate()
        return cls(settings, get_storage(settings), database, get_bus(settings))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_background(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for what ``spawn`` started."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def close(self) -> None:
        self.health.stop()
        self.relay.stop()
        self.ingestor.close()
        self.executor.shutdown(wait=True)
        self.bus.close()
        self.storage.close()
        self.database.close()
