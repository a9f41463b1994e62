"""Group commit of finished uploads: one thread records them for every request.

Each ``record`` call queues its upload and waits for its own result. The writer thread
takes everything queued (up to ``MAX_BATCH``), records it with one transaction
(``Database.record_uploads``: one fsync for the batch instead of one per upload, and no
writers queueing on SQLite's lock with its sleeping busy handler), then answers each
caller. A caller's 202 therefore still follows its own committed transaction; under
light load a batch is a single upload and nothing waits longer than before.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Sequence

from db import Database, OutboxItem

logger = logging.getLogger(__name__)

MAX_BATCH = 128
Entry = tuple[dict[str, Any], dt.datetime, Sequence[OutboxItem]]
Queued = tuple[Entry, "float | None", Future[None]]  # entry, deadline, its caller's future


class GroupCommitter:
    def __init__(self, database: Database, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def record(self, row: dict[str, Any], received_at: dt.datetime,
                     messages: Sequence[OutboxItem], deadline: float | None = None) -> None:
        """Record one upload (see ``Database.record_upload``); returns once committed."""
        future: Future[None] = Future()
        self._ensure_started()
        self._queue.put(((row, received_at, messages), deadline, future))
        await asyncio.wrap_future(future)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(30)

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="group-commit",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Queued]) -> None:
        try:
            results = self.database.record_uploads([entry for entry, _, _ in batch],
                                                   [deadline for _, deadline, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - every caller gets the failure
            for _, _, future in batch:
                future.set_exception(exc)
            return
        for (_, _, future), error in zip(batch, results):
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
