"""One pull job, from its listing to its end, resumable at any point.

1. Connect (``pull.remote.Session``). The first connection lists the provider's
   directory and records the listing (``pull.store.record_listing``): new file versions
   become the job's pending files, pending ones an earlier job left move to this one.
   A job that was listed already (a restarted puller continues it) is not listed again.
2. ``concurrency`` workers take the pending files, one at a time each: download
   (``pull.download``: small files whole into memory, larger ones resumed from their
   checkpoint, at most ``large_concurrency`` of those at once since each holds many reads
   in flight), steps and ingest (``pull.ingest``),
   then the completion action (leave, move, delete: only now, once every payload of the
   file is recorded, which makes it durable here), then the file's final state, which
   commits while the worker fetches its next file (``Finishes``; a worker waits for it
   before queueing the next one's, so it never has more than one uncommitted). A file
   that fails (steps, a vanished file, a permission error) is recorded ``failed`` with
   its reason and left on the server; the job goes on.
3. The server going away (or storage, bus or database trouble) stops the workers after
   their current file; the job reconnects after ``retry_delay`` doubling up to
   ``MAX_DELAY``. After ``retries`` attempts in a row without progress it ends ``failed``
   with the reason, its unfinished files pending for the next job. A refused host key or
   refused credentials end it at once.

Every state is in the database before it is acted upon, so a puller killed anywhere
continues the job where its records say, and repeats at most two files' ingest per
worker, which the derived request ids turn into duplicates.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from sqlalchemy.exc import DBAPIError

from bus import BusUnavailable
from core import metrics
from core.services import Services
from core.steps import StepError
from db import as_utc, utcnow
from pull import store
from pull.config import Provider
from pull.download import (
    Download,
    Downloaded,
    LeaseLost,
    ObjectPart,
    PartFile,
    complete_object,
    fetch_whole,
    fetch_whole_eligible,
)
from pull.ingest import PullIngest
from pull.remote import Refused, RemoteFileError, ServerGone, Session
from pull.store import FileRow
from storage import StorageUnavailable, resumable

logger = logging.getLogger(__name__)

MAX_DELAY = 60.0
MAX_REASON = 500  # a database error's text holds its whole statement: its first line says it
TRANSIENT = (ServerGone, StorageUnavailable, BusUnavailable, DBAPIError, OSError)


class Finishes:
    """Group commit of files' final states: the workers' ``record`` calls that arrive
    while a transaction runs share the next one (one commit, one fsync, for all of them).
    Each caller still returns only once its own row is committed, so the order payload
    durable → file recorded done holds for every file."""

    def __init__(self, db: Callable[..., Awaitable[Any]]) -> None:
        self._db = db
        self._queued: list[tuple[int, dict[str, Any], asyncio.Future[None]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def record(self, file_id: int, state: str, **fields: Any) -> None:
        await self.submit(file_id, state, **fields)

    def submit(self, file_id: int, state: str, **fields: Any) -> asyncio.Future[None]:
        """Queue a file's final state; the future is done once it is committed."""
        future = asyncio.get_running_loop().create_future()
        self._queued.append((file_id, store.final_values(state, **fields), future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._commit())
        return future

    async def _commit(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._db(store.finish_files, [(i, values) for i, values, _ in batch])
            except asyncio.CancelledError:
                for _, _, future in batch + self._queued:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every caller gets the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)


class JobRunner:
    def __init__(self, services: Services, provider: Provider, job_id: str,
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.services = services
        self.provider = provider
        self.job_id = job_id
        self.alive = alive
        self.engine = services.database.engine
        work = services.settings.workdir / "pull-work"
        self.incomplete = work / "incomplete" / provider.name
        self.ingest = PullIngest(services, provider, work / "steps")
        self.progressed = False
        self._broken: BaseException | None = None
        self.finishes = Finishes(self._db)
        self._large = asyncio.Semaphore(min(provider.large_concurrency, provider.concurrency))
        # the payload is the file as fetched: the download checkpoints its quarantine
        # object, each byte written once (pull.download)
        self.into_objects = (resumable(services.storage) is not None and not provider.steps
                             and not provider.compress)

    async def _db(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor,
                                          lambda: func(self.engine, *args, **kwargs))

    async def run(self) -> str:
        """Work the job to its end; returns its final state (or ``lost``)."""
        name = self.provider.name
        await self._db(store.start_job, self.job_id)
        logger.info("job=%s provider=%s running", self.job_id, name)
        attempts = 0
        while True:
            if not self.alive():
                logger.warning("job=%s provider=%s lease lost; another puller continues it",
                               self.job_id, name)
                return "lost"
            self.progressed, self._broken = False, None
            try:
                async with Session(self.provider) as session:
                    await self._work(session)
                return await self._finish("completed", None)
            except Refused as exc:
                return await self._finish("failed", str(exc))
            except LeaseLost:
                continue
            except TRANSIENT as exc:
                attempts = 1 if self.progressed else attempts + 1
                reason = str(exc) if isinstance(exc, ServerGone) else \
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                reason = reason[:MAX_REASON]
                if attempts >= self.provider.retries:
                    return await self._finish("failed", f"{reason} (after {attempts} attempts)")
                delay = min(MAX_DELAY, self.provider.retry_delay * 2 ** (attempts - 1))
                logger.warning("job=%s provider=%s attempt %d failed (%s); retrying in %.1fs",
                               self.job_id, name, attempts, reason, delay)
                await self._note_retry(attempts, reason)
                await asyncio.sleep(delay)

    async def _note_retry(self, attempts: int, reason: str) -> None:
        try:
            await self._db(store.update_job, self.job_id, attempts=attempts,
                           reason=f"retrying: {reason}")
        except DBAPIError as exc:
            logger.warning("job=%s retry not recorded: %s", self.job_id, exc)

    async def _finish(self, state: str, reason: str | None) -> str:
        await self._db(store.finish_job, self.job_id, state, reason)
        row = await self._db(store.job_row, self.job_id)
        started = as_utc(row["started_at"]) if row and row["started_at"] else utcnow()
        seconds = (utcnow() - started).total_seconds()
        metrics.PULL_JOB_SECONDS.labels(self.provider.name, state).observe(seconds)
        if state == "completed":
            metrics.PULL_LAST_SUCCESS.labels(self.provider.name).set(time.time())
            logger.info("job=%s provider=%s completed in %.1fs", self.job_id,
                        self.provider.name, seconds)
        else:
            logger.warning("job=%s provider=%s failed: %s", self.job_id, self.provider.name,
                           reason)
        return state

    async def _work(self, session: Session) -> None:
        job = await self._db(store.job_row, self.job_id)
        if not job["listed"]:
            listed, skipped = await session.list()
            await self._db(store.record_listing, self.job_id, self.provider.name, listed, skipped)
            logger.info("job=%s provider=%s listed %d files (%d names skipped)", self.job_id,
                        self.provider.name, len(listed), skipped)
        queue: asyncio.Queue[FileRow] = asyncio.Queue()
        for row in await self._db(store.pending_files, self.job_id):
            queue.put_nowait(row)
        workers = [self._worker(session, queue)
                   for _ in range(min(self.provider.concurrency, max(queue.qsize(), 1)))]
        await asyncio.gather(*workers)
        if self._broken is not None:
            raise self._broken
        if not self.alive():
            raise LeaseLost()

    async def _worker(self, session: Session, queue: asyncio.Queue[FileRow]) -> None:
        # the final state of this worker's last file, committing while it fetches the
        # next one: at a thousand small files the wait for that transaction was a sixth
        # of each file's time in a worker
        committing: asyncio.Future[None] | None = None
        try:
            while self._broken is None and self.alive() and not queue.empty():
                row = queue.get_nowait()
                try:
                    committing = await self._file(session, row, committing)
                except (*TRANSIENT, LeaseLost) as exc:  # the others stop after their file
                    self._broken = self._broken or exc
        finally:
            if committing is not None:
                try:
                    await committing
                except TRANSIENT as exc:
                    self._broken = self._broken or exc

    async def _file(self, session: Session, row: FileRow,
                    previous: asyncio.Future[None] | None) -> asyncio.Future[None]:
        """Work one file to its final state, queued once ``previous`` (the worker's last
        file's) is committed; returns the future of its commit."""
        part: Path | None = None
        try:
            if not self.provider.steps and row.size > self.services.settings.max_length:
                raise StepError("too_large", f"larger than MAX_LENGTH "
                                f"({self.services.settings.max_length} bytes)")
            if fetch_whole_eligible(row):
                data = await fetch_whole(session, row)
                outcome, request_ids, sha256 = await self.ingest.ingest_data(row.path, data)
            elif self.into_objects:
                async with self._large:
                    outcome, request_ids, sha256 = await self._object_file(session, row)
            else:
                part = self.incomplete / f"{row.id}.part"
                async with self._large:
                    outcome, request_ids, sha256 = await self._large_file(session, row, part)
            disposal, message = await self._dispose(session, row)
            final: dict[str, Any] = dict(sha256=sha256, request_ids=request_ids,
                                         disposal=disposal, message=message,
                                         bytes_done=row.size)
        except (StepError, RemoteFileError) as exc:
            state = "changed" if exc.code == "changed" else "failed"
            final = dict(error=exc.code, message=exc.message)
            logger.warning("job=%s provider=%s path=%s %s: %s", self.job_id, self.provider.name,
                           row.path, exc.code, exc.message)
            outcome = state
        except (*TRANSIENT, LeaseLost):
            raise
        except Exception as exc:  # noqa: BLE001 - one file's surprise must not stop the job
            logger.exception("job=%s provider=%s path=%s failed unexpectedly", self.job_id,
                             self.provider.name, row.path)
            final = dict(error="internal_error", message=type(exc).__name__)
            outcome = "failed"
        if previous is not None:
            await previous
        committing = self.finishes.submit(row.id, outcome, **final)
        committing.add_done_callback(self._note_progress)
        if part is not None:  # its checkpoint names it until the final state is in
            await committing
            await asyncio.get_running_loop().run_in_executor(
                self.services.executor, part.unlink, True)
        metrics.PULL_FILES.labels(self.provider.name, outcome).inc()
        metrics.PULL_BYTES.labels(self.provider.name, outcome).inc(row.size)
        return committing

    def _note_progress(self, committed: asyncio.Future[None]) -> None:
        """A file's final state committed is progress (a retry's attempts count anew);
        one that failed to commit is not, or a database that stays down would be retried
        for ever."""
        if not committed.cancelled() and committed.exception() is None:
            self.progressed = True

    async def _object_file(self, session: Session, row: FileRow) -> tuple[str, list[str], str]:
        """Download into an incomplete quarantine object (resumable), then record it as
        it stands. A file that fails for good takes its object with it; one stopped by
        the server, storage or a lost lease keeps it for the next attempt."""
        sha1 = self.ingest.needs_sha1()
        downloaded = complete_object(row, sha1)
        part: ObjectPart | None = None
        try:
            if downloaded is None:
                def open_part() -> ObjectPart:
                    nonlocal part
                    part = ObjectPart(self.services.storage, row, sha1)
                    return part
                downloaded = await Download(
                    session, row, open_part, self.services.executor,
                    lambda offset, state: self._checkpoint(row, offset, state), sha1,
                    alive=self.alive).run()
            if not self.alive():
                raise LeaseLost(f"{row.path}: the provider's lease was lost")
            outcome, request_ids = await self.ingest.ingest_object(row.path, downloaded)
        except (*TRANSIENT, LeaseLost, asyncio.CancelledError):
            raise
        except Exception:
            await self._discard(row, part, downloaded)
            raise
        assert downloaded.sha256 is not None
        return outcome, request_ids, downloaded.sha256

    async def _discard(self, row: FileRow, part: ObjectPart | None,
                       downloaded: Downloaded | None) -> None:
        key = (part.key if part is not None else
               downloaded.stored.key if downloaded is not None and downloaded.stored else None)
        if key is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.services.executor, self.ingest.discard_object, key)
        except Exception as exc:  # noqa: BLE001 - the tus sweeper removes leftovers later
            logger.warning("job=%s path=%s object %s not removed: %s", self.job_id, row.path,
                           key, exc)

    async def _large_file(self, session: Session, row: FileRow,
                          part: Path) -> tuple[str, list[str], str]:
        """Download into the incomplete file (resumable) and, when the provider has no
        steps, into quarantine at the same time (``PullIngest.open_stream``)."""
        stream = self.ingest.open_stream(row.path)
        sha1 = self.ingest.needs_sha1()
        hashing = stream is None or sha1  # the stream hashes sha256 itself
        try:
            downloaded = await Download(
                session, row, lambda: PartFile(part, row.bytes_done, sha1, hashing),
                self.services.executor,
                lambda offset, _state: self._checkpoint(row, offset), sha1,
                stream, self.services.settings.ingest_deadline / 3, self.alive).run()
            if downloaded.sha256 is None:
                downloaded = await self.ingest.hashed(downloaded)
            if downloaded.streamed:
                assert stream is not None
                outcome, request_ids = await self.ingest.ingest_stream(row.path, stream,
                                                                       downloaded)
            else:
                outcome, request_ids = await self.ingest.ingest(row.path, downloaded)
        finally:
            if stream is not None:
                await stream.abort()  # nothing when it was recorded (or given up) already
        assert downloaded.sha256 is not None
        return outcome, request_ids, downloaded.sha256

    async def _checkpoint(self, row: FileRow, offset: int, state: str | None = None) -> None:
        await self._db(store.checkpoint, row.id, offset, state)
        self.progressed = True

    async def _dispose(self, session: Session, row: FileRow) -> tuple[str, str | None]:
        """The completion action; its failure is noted on the file, which stays ingested."""
        try:
            return await session.dispose(row.path), None
        except RemoteFileError as exc:
            logger.warning("job=%s provider=%s path=%s completion %s failed: %s", self.job_id,
                           self.provider.name, row.path, self.provider.completion, exc.message)
            return "failed", f"completion {self.provider.completion} failed: {exc.message}"


def due(last: dt.datetime | None, every: float | None, now: dt.datetime) -> bool:
    """Whether a scheduled job is due: never ran, or last started ``every`` seconds ago."""
    if every is None:
        return False
    return last is None or (now - last).total_seconds() >= every

