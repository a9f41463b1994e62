"""The watcher's moving parts on the process's asyncio loop.

- watchdog's inotify observer (recursive, on ``WATCH_DIR``) reports created, moved-in and
  closed-after-writing files; its thread stats each one and hands batches to the loop with
  ``call_soon_threadsafe``. ``Processed/``, ``Failed/``, hidden and temporary files are
  left out.
- A scan at start-up, and every ``RESCAN_SECONDS`` after, finds what no event announced
  (files there before we started, events lost to an inotify queue overflow, network
  shares that send none). Links to directories are found too, never followed: like any
  file that is not a regular one (a link, FIFO, socket or device) they go to ``Failed/``
  (``watcher.files``); what cannot even be moved there is left alone and logged once
  (outcome ``ignored``), until it changes.
- The ticker hands files that are complete (``watcher.tracker``) to ``concurrency``
  workers (``WATCH_CONCURRENCY``, 8), each running one file at a time through
  ``watcher.pipeline``. A file that failed for a transient reason is tried again after
  ``RETRY_DELAY`` (1 s), doubling to ``MAX_RETRY_DELAY`` (60 s); one that changed while
  it was ingested, after another quiet period. The ticker sleeps until the next file is
  due and is woken whenever a file becomes due sooner (a new file while another waits
  out its backoff, a file handed back by a worker).
- Progress: ``gateway_watcher_backlog_files``, ``gateway_watcher_files_total{outcome}``,
  ``gateway_watcher_failures_total{reason}`` and ``gateway_watcher_throughput_files_per_second`` in
  ``/metrics``, and a log line every ``PROGRESS_SECONDS`` while there is work.

Idle, nothing runs but the observer's blocking read, a rescan every 30 s and a metrics
update every 5 s.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path
from stat import S_ISREG
from typing import Any

import tornado.web
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from core import metrics
from core.services import Services
from core.steps import Decryptor, Limits
from watcher.config import rules_of
from watcher.pipeline import FAILED, PROCESSED, Pipeline
from watcher.rejections import Rejections
from watcher.rules import DEFAULT_RULES, is_ignored
from watcher.tracker import Stat, Tracker, open_for_writing, stat_of

logger = logging.getLogger(__name__)

RESCAN_SECONDS = 30.0
PROGRESS_SECONDS = 5.0
RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 60.0
STOP_GRACE = 10.0
STALE_WORK_SECONDS = 3600.0
EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileMovedEvent, FileClosedEvent]
DONE = ("ingested", "duplicate", "failed", "ignored")


class _StopRace(logging.Filter):
    """watchdog 7 logs an ERROR when its emitter reads one more event while it is being
    stopped (the event is dropped, which is what we want then): not worth an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRace())


def _regular(path: str) -> bool:
    try:
        return S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class _Events(FileSystemEventHandler):
    """Runs in watchdog's thread."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_created(self, event: FileSystemEvent) -> None:
        self.watcher.seen_from_thread(str(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        self.watcher.seen_from_thread(str(event.dest_path))

    def on_closed(self, event: FileSystemEvent) -> None:
        self.watcher.seen_from_thread(str(event.src_path))


class Watcher:
    def __init__(self, services: Services) -> None:
        settings = services.settings
        assert settings.watch_dir is not None, "the watcher needs WATCH_DIR"
        self.services = services
        self.root = settings.watch_dir
        self._prefix = str(self.root) + "/"
        rules = rules_of(settings)
        limits = Limits(settings.max_length, settings.watch_max_ratio, settings.watch_max_members)
        needs_gpg = any("decrypt" in rule.steps for rule in rules)
        decryptor = Decryptor(settings.gpg_home, settings.gpg_passphrase) if needs_gpg else None
        self.pipeline = Pipeline(services, rules, limits, decryptor)
        self.tracker = Tracker(settings.watch_quiet_seconds)
        self._rejections = Rejections(services).loop()
        self.tick = min(0.25, settings.watch_quiet_seconds / 4)
        self.concurrency = settings.watch_concurrency
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.busy: set[str] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        self._retries: dict[str, int] = {}
        self._ignored: dict[str, Stat] = {}  # could not even be moved to Failed/
        self._inbox: list[tuple[str, Stat]] = []
        self._inbox_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._sleep_until = -math.inf  # when the ticker wakes by itself (tracker clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._workers: list[asyncio.Task[Any]] = []

    # life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._run(self._prepare_dirs)
        self._observer = Observer()
        self._observer.schedule(_Events(self), str(self.root), recursive=True, event_filter=EVENTS)
        await self._run(self._observer.start)
        metrics.WATCHER_BACKLOG.set_function(self.backlog)
        self._rejections.start()
        self._tasks = [self._loop.create_task(coro) for coro in
                       (self._ticker(), self._rescanner(), self._progress())]
        self._workers = [self._loop.create_task(self._worker()) for _ in range(self.concurrency)]
        logger.info("watcher on %s (quiet %.1fs, %d at a time, rules %s)", self.root,
                    self.tracker.quiet, self.concurrency,
                    self.services.settings.watch_rules or DEFAULT_RULES)

    async def stop(self) -> None:
        """Stop watching; let files in progress finish (bounded), leave the rest in place."""
        await self._run(self._rejections.stop)
        if self._observer is not None:
            self._observer.stop()
            await self._run(self._observer.join, 5)
        for task in self._tasks:
            task.cancel()
        while not self.queue.empty():
            path = self.queue.get_nowait()
            if path is not None:
                self.busy.discard(path)
        for _ in self._workers:
            self.queue.put_nowait(None)
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._tasks, *self._workers, return_exceptions=True)
        self._log_progress(0.0)

    def _prepare_dirs(self) -> None:
        for folder in (self.root / PROCESSED, self.root / FAILED):  # WATCH_DIR is never made
            folder.mkdir(exist_ok=True)
        work = self.pipeline.work
        if work.is_dir():
            for entry in work.iterdir():
                if time.time() - entry.stat().st_mtime > STALE_WORK_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)

    async def _run(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor, func, *args)

    def backlog(self) -> int:
        return len(self.tracker) + len(self.busy)

    # discovery ----------------------------------------------------------------------------

    def relative(self, path: str) -> str | None:
        """The path relative to WATCH_DIR, or None when it is not ours to ingest."""
        if not path.startswith(self._prefix):
            return None
        relative = path[len(self._prefix):]
        if relative.split("/", 1)[0] in (PROCESSED, FAILED) or is_ignored(relative):
            return None
        return relative

    def seen_from_thread(self, path: str) -> None:
        """An event for ``path`` (watchdog's thread): stat it here, batch it to the loop."""
        if self.relative(path) is None or (stat := stat_of(path)) is None:
            return
        with self._inbox_lock:
            self._inbox.append((path, stat))
            first = len(self._inbox) == 1
        if first and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:  # the loop is closed: we are shutting down
                pass

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
        for path, stat in batch:
            self._observe(path, stat)

    def _observe(self, path: str, stat: Stat) -> None:
        if path not in self.busy and self._ignored.get(path) != stat:
            self._track(path, stat)

    def _track(self, path: str, stat: Stat, delay: float | None = None) -> None:
        """Track ``path`` (after ``delay`` when given: a retry), and wake the ticker when
        it is due before the ticker would wake by itself."""
        self.tracker.observe(path, stat)
        if delay is not None:
            self.tracker.touch(path, delay)
        if self.tracker.due_at(path) < self._sleep_until:
            self._wake.set()

    def _scan(self) -> list[tuple[str, Stat]]:
        found = []
        for top, dirs, files in os.walk(self.root):
            if top == str(self.root):
                dirs[:] = [d for d in dirs if d not in (PROCESSED, FAILED)]
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
            for name in [*files, *links]:
                path = os.path.join(top, name)
                if self.relative(path) is not None and (stat := stat_of(path)) is not None:
                    found.append((path, stat))
        return found

    async def _rescanner(self) -> None:
        first = True
        while True:
            found = await self._run(self._scan)
            self._ignored = {path: seen for path, seen in found if self._ignored.get(path) == seen}
            for path, seen in found:
                self._observe(path, seen)
            if first and found:
                logger.info("watcher: %d files already in %s", len(found), self.root)
            first = False
            await asyncio.sleep(RESCAN_SECONDS)

    # completion and work ------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            delay = self.tracker.next_due()
            if delay is None or delay > 0:
                self._sleep_until = math.inf if delay is None else self.tracker.clock() + delay
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                finally:
                    self._sleep_until = -math.inf
                continue
            await self._dispatch_complete()
            await asyncio.sleep(self.tick)

    async def _dispatch_complete(self) -> None:
        due = self.tracker.due()
        stats = await self._run(lambda: [stat_of(path) for path in due])
        stable = [path for path, stat in zip(due, stats) if path in self.tracker
                  and self.tracker.settle(path, stat)]
        if not stable:
            return
        held = await self._run(self._held)
        for path in stable:
            if path in held:
                logger.debug("path=%s still open for writing", self.relative(path))
                self.tracker.touch(path)
                continue
            self.tracker.forget(path)
            self.busy.add(path)
            self.queue.put_nowait(path)

    def _held(self) -> set[str]:
        """Regular files some process holds open for writing (a FIFO held by a writer is
        no file in the making: it goes to Failed/ at once)."""
        return {path for path in open_for_writing(str(self.root)) if _regular(path)}

    async def _worker(self) -> None:
        while (path := await self.queue.get()) is not None:
            try:
                outcome = await self.pipeline.process(Path(path))
            except Exception:  # noqa: BLE001 - one file must not stop the watcher
                logger.exception("path=%s unexpected error; will retry", self.relative(path))
                outcome = "retry"
            self._finished(path, outcome)

    def _finished(self, path: str, outcome: str) -> None:
        self.busy.discard(path)
        if outcome in DONE:
            self._retries.pop(path, None)
            if outcome == "ignored" and (seen := stat_of(path)) is not None:
                self._ignored[path] = seen
            self.counts[outcome] += 1
            metrics.WATCHER_FILES.labels(outcome).inc()
            return
        stat = stat_of(path)
        if outcome == "gone" or stat is None:
            self._retries.pop(path, None)
            return
        delay = None
        if outcome == "retry":
            attempts = self._retries[path] = self._retries.get(path, 0) + 1
            delay = min(MAX_RETRY_DELAY, RETRY_DELAY * 2.0 ** (attempts - 1))
        self._track(path, stat, delay)

    # progress -----------------------------------------------------------------------------

    async def _progress(self) -> None:
        done, since = sum(self.counts.values()), time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            now_done, now = sum(self.counts.values()), time.monotonic()
            rate = (now_done - done) / (now - since)
            metrics.WATCHER_RATE.set(rate)
            if now_done != done or self.backlog():
                self._log_progress(rate)
            done, since = now_done, now

    def _log_progress(self, rate: float) -> None:
        logger.info("watcher: backlog %d files, %.1f files/s; so far %d ingested, %d duplicates, "
                    "%d failed", self.backlog(), rate, self.counts["ingested"],
                    self.counts["duplicate"], self.counts["failed"])


def status_app(services: Services) -> tornado.web.Application:
    """``/metrics``, ``/livez``, ``/readyz`` and ``/api/v1/health`` for a process that runs
    the watcher alone."""
    from upload import api
    from upload.app import status_application

    return status_application(services, api.probe_routes(services))
