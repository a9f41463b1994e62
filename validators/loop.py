"""The loop every validator shares: consume the announcements of one service
(``platform.upload.<service>``), fetch each payload through its signed URL, run a check,
publish the verdict on ``platform.upload.validation``, then commit.

Concurrency: one thread polls the bus and owns the consumer (polls and commits happen on
it only); up to ``workers`` messages (``VALIDATOR_WORKERS``, 4) are checked at once on a
thread pool. While the pool is full the poller takes no new message. Offsets are committed in
the order the messages were polled, per partition, and only up to the oldest message that
is not finished yet, so a crash can only repeat work, never skip it; at most every
``COMMIT_INTERVAL`` (0.1 s), not after each message (every commit of the embedded bus is
an fsynced transaction the other writers of the file wait for). On Kafka the workers
share every partition this member was assigned; on the embedded bus a group reads a topic
through one member at a time, so the concurrency there is per process (start more workers,
not more processes). A message polled again while it is still in flight (a lease or
partition came back to this member) is not started twice.

At least once, idempotent: the verdict is acknowledged by the broker before the offset is
committed; a crash in between repeats the verdict, which the gateway treats as a
duplicate. A request id answered recently (the outbox may announce a payload twice) gets
its earlier verdict again without a second fetch and check.

Failures, three kinds (validators/fetch.py tells the first two apart):
- the content: a refused fetch (4xx: the URL expired or was forged), a checksum mismatch or
  a check's own refusal is a ``failure`` verdict;
- an outage (``ConnectionError``/``TimeoutError``: the payload server unreachable, a
  reset, a timeout, 5xx, throttling) is retried, waiting ``retry_delay`` (1 s) doubling up
  to ``MAX_TRANSIENT_DELAY`` (30 s), or until another worker got through (the outage is
  over), for as long as the payload has time left: until its
  ``timestamp`` + ``VALIDATION_TIMEOUT`` (from when it was first polled when it has no
  readable timestamp). Past that the gateway has rejected it (reason ``timeout``) and a
  verdict would come too late: the announcement is committed without one, logged and
  counted (``gateway_validator_expired_total``). These retries are not attempts;
- poison: a check that raised anything else, a command that could not start, an
  announcement that is not a JSON object or lacks ``request_id``/``url`` (not retried) is
  tried ``max_attempts`` times in all (``VALIDATOR_MAX_ATTEMPTS``, 3), waiting
  ``retry_delay`` doubling up to 60 s, then goes to the dead-letter topic
  ``platform.upload.<service>.dlq`` with ``error``, ``attempts`` and ``failed_at`` added,
  and is committed. No verdict is sent for it: the payload stays in quarantine until
  ``VALIDATION_TIMEOUT`` rejects it, unless an operator re-drives the dead letters first
  (``python app.py redrive SERVICE``, validators/redrive.py).
``BusUnavailable`` while publishing is retried without counting until the bus is back:
without a bus there is nowhere to put a verdict or a dead letter. Attempts are counted in
memory: a restart starts the count again.

While every worker is busy (or waiting to retry) the poller pauses the consumer and keeps
polling it, so that a Kafka member stays in its group (``max.poll.interval.ms``) through a
long outage and rebalances are served.
"""
from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Sequence

from bus import Bus, BusUnavailable, Message, OutMessage
from bus.topics import VALIDATION as VALIDATION_TOPIC
from bus.topics import dead_letter_topic, service_topic
from core import metrics
from core.consumer import MalformedMessage, decode
from validators.fetch import FetchRefused, fetch, gunzip_into
from validators.pending import Pending

__all__ = ["Check", "FetchRefused", "ValidatorLoop", "Verdict", "chain", "fetch"]

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = 60.0
MAX_TRANSIENT_DELAY = 30.0
TRANSIENT = (ConnectionError, TimeoutError)
RECENT_ANSWERS = 1024
COMMIT_INTERVAL = 0.1
# a pool busy this long pauses the consumer and keeps polling it (see the module)
PAUSE_AFTER = 2.0


@dataclass(frozen=True)
class Verdict:
    validation: str
    reason: str | None = None
    extra: dict[str, Any] | None = None


# A check gets the announcement and the payload's original bytes as an open, seekable
# file at offset 0. Up to SPOOL_BYTES it is held in memory, beyond that in an unnamed
# temporary file: no file is created and deleted per payload (on a journal-less ext4 every
# file created after thousands of deletions scans their inodes, ``recently_deleted``:
# 20 % of the machine's CPU at 100 uploads/s, bench/README.md). A check with a true
# ``needs_path`` attribute (validators/command.py) gets instead a file whose ``name`` is a
# real path inside a private temporary directory.
Check = Callable[[dict[str, Any], BinaryIO], Verdict]
SPOOL_BYTES = 1024 * 1024


def chain(checks: Sequence[Check]) -> Check:
    """One check running ``checks`` in order: the first verdict that is not ``success``
    wins; all succeeding gives ``success`` with their extra fields merged."""
    if len(checks) == 1:
        return checks[0]

    def run_all(announcement: dict[str, Any], payload: BinaryIO) -> Verdict:
        extra: dict[str, Any] = {}
        for check in checks:
            payload.seek(0)
            verdict = check(announcement, payload)
            if verdict.validation != "success":
                return verdict
            extra.update(verdict.extra or {})
        return Verdict("success", None, extra or None)
    run_all.needs_path = any(needs_path(check) for check in checks)  # type: ignore[attr-defined]
    return run_all


def needs_path(check: Check) -> bool:
    """Whether ``check`` reads its payload by path (see ``Check``)."""
    return bool(getattr(check, "needs_path", False))


class ValidatorLoop:
    """Runs ``check`` on every announcement of ``service``; see the module docstring."""

    def __init__(self, bus: Bus, service: str, check: Check, group: str | None = None,
                 workers: int = 4, max_attempts: int = 3, retry_delay: float = 1.0,
                 validation_timeout: float = 3600.0) -> None:
        self.bus = bus
        self.service = service
        self.check = check
        self.group = group or f"validator-{service}"
        self.topic = service_topic(service)
        self.name = f"validator-{service}"
        self.workers = workers
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.validation_timeout = validation_timeout
        self._producer = bus.producer()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=self.name)
        self._slots = threading.Semaphore(workers)
        self._pending = Pending()
        self._held: Message | None = None  # polled while paused, not started yet
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answered: collections.OrderedDict[str, Verdict] = collections.OrderedDict()
        self._answered_lock = threading.Lock()
        # workers waiting out an outage; the first that gets through wakes the others
        self._outage = threading.Condition()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, let the running checks finish (up to ``timeout``), commit what
        is finished. Messages abandoned in a retry wait are redelivered later."""
        self._stop.set()
        self._wake.set()
        with self._outage:
            self._outage.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._producer.close()

    # the poller ---------------------------------------------------------------------------

    def run(self) -> None:
        consumer = self.bus.consumer(self.group, [self.topic])
        next_commit = 0.0
        full_since: float | None = None
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_commit:
                    self._commit(consumer)
                    next_commit = time.monotonic() + COMMIT_INTERVAL
                if not self._slots.acquire(timeout=0.2):
                    full_since = full_since or time.monotonic()
                    if time.monotonic() - full_since >= PAUSE_AFTER:
                        self._serve_paused(consumer)
                    continue
                if full_since is not None:
                    full_since = None
                    consumer.resume()
                self._poll_one(consumer)
            self._drain(consumer)
        finally:
            consumer.close()

    def _poll_one(self, consumer: Any) -> None:
        """Poll one message into a free slot (held by the caller) and start it."""
        message, self._held = self._held, None
        if message is None:
            try:
                message = consumer.poll(0.2)
            except BusUnavailable as exc:
                logger.warning("%s: bus unavailable (%s); retrying", self.name, exc)
                self._stop.wait(1.0)
        if message is None or not self._pending.add(message):
            self._slots.release()
            return
        self._pool.submit(self._work, message)

    def _serve_paused(self, consumer: Any) -> None:
        """Every worker has been busy for a while: keep the consumer in its group
        (heartbeats, rebalances, Kafka's poll interval) without taking messages. A
        message it returns anyway waits for the next free slot."""
        if self._held is not None:
            return
        consumer.pause()
        try:
            self._held = consumer.poll(0)
        except BusUnavailable:
            pass

    def _drain(self, consumer: Any) -> None:
        deadline = time.monotonic() + 10.0
        acquired = 0
        while acquired < self.workers and time.monotonic() < deadline:
            if self._slots.acquire(timeout=0.1):
                acquired += 1
        self._commit(consumer)

    def _commit(self, consumer: Any) -> None:
        for message in self._pending.committable():
            try:
                consumer.commit(message)
            except BusUnavailable as exc:  # a later commit covers it
                logger.warning("%s: commit of offset %d failed (%s)", self.name,
                               message.offset, exc)

    def _work(self, message: Message) -> None:
        try:
            if self._process(message):
                self._pending.finish(message)
        except Exception:  # noqa: BLE001 - never lose the slot
            logger.exception("%s: key=%s unexpected error; left uncommitted", self.name,
                             message.key)
        finally:
            self._slots.release()

    # one message --------------------------------------------------------------------------

    def _process(self, message: Message) -> bool:
        """True when the message is done with (answered, dead-lettered or expired)."""
        try:
            announcement = decode(message)
        except MalformedMessage as exc:
            return self._dead_letter(message, f"malformed announcement: {exc}", 1)
        deadline = self._deadline(announcement)
        attempt = outages = 0
        while not self._stop.is_set():
            try:
                self.handle(announcement, message)
                if outages:
                    with self._outage:
                        self._outage.notify_all()
                return True
            except BusUnavailable as exc:
                logger.warning("%s: request_id=%s bus unavailable (%s); retrying",
                               self.name, message.key, exc)
                delay = 1.0
            except MalformedMessage as exc:
                return self._dead_letter(message, f"malformed announcement: {exc}", attempt + 1)
            except TRANSIENT as exc:
                outages += 1
                left = deadline - time.time()
                if left <= 0:
                    return self._expired(message, exc, outages)
                delay = min(left, MAX_TRANSIENT_DELAY, self.retry_delay * 2 ** (outages - 1))
                logger.warning("%s: request_id=%s not validated yet (%s: %s); retry %d in "
                               "%.1fs, %.0fs left before its validation timeout", self.name,
                               message.key, type(exc).__name__, exc, outages, delay, left)
                with self._outage:  # or as soon as another worker got through
                    self._outage.wait(delay)
                continue
            except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered
                attempt += 1
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: request_id=%s attempt %d of %d failed: %s", self.name,
                               message.key, attempt, self.max_attempts, error)
                if attempt >= self.max_attempts:
                    return self._dead_letter(message, error, attempt)
                delay = min(MAX_RETRY_DELAY, self.retry_delay * 2 ** (attempt - 1))
            self._stop.wait(delay)
        return False

    def _deadline(self, announcement: dict[str, Any]) -> float:
        """When the payload's ``VALIDATION_TIMEOUT`` runs out (wall clock, as the
        gateway's timestamps): from its ``timestamp``, else from now."""
        start = time.time()
        stamp = announcement.get("timestamp")
        if isinstance(stamp, str):
            try:
                parsed = dt.datetime.fromisoformat(stamp)
            except ValueError:
                pass
            else:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=dt.UTC)
                start = parsed.timestamp()
        return start + self.validation_timeout

    def _expired(self, message: Message, exc: Exception, outages: int) -> bool:
        metrics.VALIDATOR_EXPIRED.labels(self.service).inc()
        logger.error("request_id=%s %s gave up after %d failed tries (%s: %s): its validation "
                     "timeout has passed, so the gateway rejects it without a verdict",
                     message.key, self.name, outages, type(exc).__name__, exc)
        return True

    def handle(self, announcement: dict[str, Any], message: Message | None = None) -> None:
        request_id = announcement.get("request_id")
        url = announcement.get("url")
        if not isinstance(request_id, str) or not isinstance(url, str):
            raise MalformedMessage("announcement without request_id or url")
        with self._answered_lock:
            earlier = self._answered.get(request_id)
        if earlier is not None:
            logger.info("request_id=%s announced again; repeating the verdict", request_id)
            self.publish(request_id, earlier)
            return
        started = time.monotonic()
        verdict = self._validate(request_id, announcement, url)
        metrics.VALIDATOR_SECONDS.labels(self.service).observe(time.monotonic() - started)
        self.publish(request_id, verdict)
        metrics.VALIDATOR_VERDICTS.labels(self.service, verdict.validation).inc()
        with self._answered_lock:
            self._answered[request_id] = verdict
            while len(self._answered) > RECENT_ANSWERS:
                self._answered.popitem(last=False)

    def _validate(self, request_id: str, announcement: dict[str, Any], url: str) -> Verdict:
        gzipped = announcement.get("compression") == "gzip"
        with contextlib.ExitStack() as files:
            new_file = self._file_maker(files)
            stored = new_file("stored" if gzipped else "payload")
            try:
                sha256 = fetch(url, stored)
            except FetchRefused as exc:
                return Verdict("failure", str(exc))
            # checksums describe the bytes at the URL (stored_sha256: announced before
            # core/checksums.py, still in flight)
            checksums = announcement.get("checksums") or {}
            expected = checksums.get("stored_sha256") or checksums.get("sha256")
            if expected and expected != sha256:
                return Verdict("failure", f"checksum mismatch: fetched {sha256}")
            payload = stored
            if gzipped:
                payload = new_file("payload")
                content = gunzip_into(stored, payload)
                stored.close()
                if isinstance(stored.name, str):  # a named file: not left beside the payload
                    os.unlink(stored.name)
                expected = (announcement.get("uncompressed") or {}).get("sha256")
                if expected and expected != content:
                    return Verdict("failure", f"checksum mismatch: uncompressed {content}")
                payload.flush()
                payload.seek(0)
            return self.check(announcement, payload)

    def _file_maker(self, files: contextlib.ExitStack) -> Callable[[str], BinaryIO]:
        """New files for one payload, closed (and removed) with ``files``: in memory up to
        ``SPOOL_BYTES`` and an unnamed file beyond; for a check that reads by path
        (``needs_path``), files of that name in a private temporary directory."""
        if not needs_path(self.check):
            return lambda _name: files.enter_context(
                tempfile.SpooledTemporaryFile(SPOOL_BYTES))  # type: ignore[return-value]
        workdir = tempfile.mkdtemp(prefix=f"{self.name}-")
        files.callback(shutil.rmtree, workdir, True)  # last: after the files are closed
        return lambda name: files.enter_context(open(os.path.join(workdir, name), "w+b"))

    def publish(self, request_id: str, verdict: Verdict) -> None:
        body = {**(verdict.extra or {}), "request_id": request_id,
                "validation": verdict.validation}
        if verdict.reason:
            body["reason"] = verdict.reason
        self._send(VALIDATION_TOPIC, request_id, body)
        logger.info("request_id=%s %s validator answered %s%s", request_id, self.service,
                    verdict.validation, f": {verdict.reason}" if verdict.reason else "")

    def _dead_letter(self, message: Message, error: str, attempts: int) -> bool:
        try:
            record = decode(message)
        except MalformedMessage:
            record = {"raw": message.value.decode("utf-8", "replace")}
        record.update(error=error[:4000], attempts=attempts,
                      failed_at=dt.datetime.now(dt.UTC).isoformat())
        while not self._stop.is_set():
            try:
                self._send(dead_letter_topic(self.service), message.key, record)
                break
            except BusUnavailable as exc:
                logger.warning("%s: request_id=%s dead letter not sent (%s); retrying",
                               self.name, message.key, exc)
                self._stop.wait(1.0)
        else:
            return False
        metrics.VALIDATOR_DEAD_LETTERS.labels(self.service).inc()
        logger.error("request_id=%s dead-lettered to %s after %d attempts: %s", message.key,
                     dead_letter_topic(self.service), attempts, error)
        return True

    def _send(self, topic: str, key: str | None, body: dict[str, Any]) -> None:
        message = OutMessage(topic, key, json.dumps(body).encode())
        if not self._producer.send([message], 10.0)[0]:
            raise BusUnavailable(f"message to {topic} not acknowledged")
