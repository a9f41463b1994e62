"""The puller role: one loop per provider on the process's asyncio loop.

Each loop tries to hold its provider's lease (``pull_leases``, ``LEASE_SECONDS``, renewed
every third of that while held): only the holder works the provider, so any number of
pullers may run against one database and each provider is worked by one at a time; a
puller that dies loses its lease when it expires and another continues its job. While it
holds the lease the loop runs the provider's queued or running job (``pull.job``),
starts a scheduled one when the provider's ``schedule`` has passed since the last job
began, and otherwise sleeps ``POLL_SECONDS`` or until ``wake`` (a job posted through the
API of this process). A puller that stops releases its leases, leaving its jobs
``running`` for whichever puller takes the lease next.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from sqlalchemy.exc import DBAPIError

from core import metrics
from core.services import Services
from db import utcnow
from pull import store
from pull.config import Provider
from pull.job import JobRunner, due
from pull.store import JobRunning

logger = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
POLL_SECONDS = 2.0


class Puller:
    def __init__(self, services: Services, providers: dict[str, Provider],
                 lease_seconds: float = LEASE_SECONDS, poll_seconds: float = POLL_SECONDS) -> None:
        self.services = services
        self.providers = providers
        self.engine = services.database.engine
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.holder = f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wakes = {name: asyncio.Event() for name in providers}
        self._held_until: dict[str, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # an acquire already running in a pool thread when stop() comes must not take the
        # lease again after stop() released it
        self._lease_lock = threading.Lock()
        self._stopping = False

    async def _db(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor, func, self.engine, *args)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        for name in self.providers:
            last = await self._db(store.last_success_at, name)
            if last is not None:
                metrics.PULL_LAST_SUCCESS.labels(name).set(last.timestamp())
        self._tasks = [self._loop.create_task(self._provider_loop(p))
                       for p in self.providers.values()]
        logger.info("puller %s for providers %s", self.holder, ", ".join(sorted(self.providers)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.get_running_loop().run_in_executor(self.services.executor,
                                                             self._release_all)
        except DBAPIError as exc:
            logger.warning("leases not released (they expire by themselves): %s", exc)
        self._held_until.clear()

    def _release_all(self) -> None:
        with self._lease_lock:
            self._stopping = True
            for name in self.providers:  # an acquire cut short by the cancel may hold one
                store.release_lease(self.engine, name, self.holder)

    def _acquire_lease(self, name: str) -> bool:
        with self._lease_lock:
            return not self._stopping and store.acquire_lease(self.engine, name, self.holder,
                                                              self.lease_seconds)

    def wake(self, provider: str) -> None:
        """A job was posted for ``provider``: look now (thread-safe)."""
        event = self._wakes.get(provider)
        if event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(event.set)

    def holds(self, provider: str) -> bool:
        return time.monotonic() < self._held_until.get(provider, 0.0)

    async def _acquire(self, name: str) -> bool:
        asked = time.monotonic()
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self.services.executor, self._acquire_lease, name):
            self._held_until[name] = asked + self.lease_seconds
            return True
        self._held_until.pop(name, None)
        return False

    async def _provider_loop(self, provider: Provider) -> None:
        name = provider.name
        while True:
            try:
                if await self._acquire(name):
                    await self._turn(provider)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop outlives any one failure
                logger.exception("provider=%s puller loop failed; trying again", name)
            event = self._wakes[name]
            try:
                await asyncio.wait_for(event.wait(), self.poll_seconds)
            except TimeoutError:
                pass
            event.clear()

    async def _turn(self, provider: Provider) -> None:
        """Run the provider's job, or start a scheduled one, while holding its lease."""
        name = provider.name
        job_id = await self._db(store.active_job_id, name)
        if job_id is None and due(await self._db(store.last_job_at, name), provider.schedule,
                                  utcnow()):
            try:
                job_id = await self._db(store.create_job, name, "schedule")
                logger.info("job=%s provider=%s scheduled", job_id, name)
            except JobRunning as exc:
                job_id = exc.job_id
        if job_id is None:
            return
        renewer = asyncio.get_running_loop().create_task(self._renew(name))
        try:
            await JobRunner(self.services, provider, job_id, lambda: self.holds(name)).run()
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _renew(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await self._acquire(name):
                    logger.warning("provider=%s lease taken by another puller", name)
                    return
            except DBAPIError as exc:
                logger.warning("provider=%s lease not renewed: %s", name, exc)
