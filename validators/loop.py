"""The loop every validator shares: consume the announcements of one service
(``platform.upload.<service>``), fetch each payload through its signed URL, run a check,
publish the verdict on ``platform.upload.validation``, then commit.

Concurrency: one thread polls the bus and owns the consumer (polls and commits happen on
it only); up to ``workers`` messages (``VALIDATOR_WORKERS``, 4) are checked at once on a
thread pool. While the pool is full the poller stops polling. Offsets are committed in
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

Failures: a refused fetch (4xx: the URL expired or was forged) and a checksum mismatch are
``failure`` verdicts. Any other error (unreachable payload server, a check that raised, a
command that could not start) is retried up to ``max_attempts`` times in all
(``VALIDATOR_MAX_ATTEMPTS``, 3), waiting ``retry_delay`` (1 s) doubling up to 60 s; an
announcement that is not a JSON object or lacks ``request_id``/``url`` is not retried.
Then the announcement goes to the dead-letter topic ``platform.upload.<service>.dlq`` with
``error``, ``attempts`` and ``failed_at`` added, and is committed. No verdict is sent for
it: the payload stays in quarantine until ``VALIDATION_TIMEOUT`` rejects it (reason
``timeout``), unless an operator replays the dead letter onto the service topic first
(the added fields are ignored). ``BusUnavailable`` while publishing is retried without
counting until the bus is back: without a bus there is nowhere to put a dead letter.
Attempts are counted in memory: a restart starts the count again.

Kafka note: a member that does not poll for ``max.poll.interval.ms`` (5 min) leaves the
group, so a check that runs longer than that while every worker is busy causes a rebalance
and the message is redelivered (at least once still holds).
"""
from __future__ import annotations

import collections
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Sequence

from bus import Bus, BusUnavailable, Message, OutMessage
from bus.topics import VALIDATION as VALIDATION_TOPIC
from bus.topics import dead_letter_topic, service_topic
from core import metrics
from core.consumer import MalformedMessage, decode

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 30.0
MAX_RETRY_DELAY = 60.0
RECENT_ANSWERS = 1024
COMMIT_INTERVAL = 0.1


@dataclass(frozen=True)
class Verdict:
    validation: str
    reason: str | None = None
    extra: dict[str, Any] | None = None


# A check gets the announcement and the payload's original bytes as an open file at
# offset 0 whose ``name`` is a real path inside a private temporary directory.
Check = Callable[[dict[str, Any], BinaryIO], Verdict]


class FetchRefused(Exception):
    """The storage answered that this URL will never work (expired, forged, gone)."""


def fetch(url: str, sink: BinaryIO) -> str:
    """Stream ``url`` into ``sink``; returns the sha256 of what was fetched. A refused
    URL (4xx) is ``FetchRefused``; an unreachable or failing server (5xx) is a
    ``ConnectionError``, which the loop retries."""
    if not url.lower().startswith(("http://", "https://")):
        # never file:// or other schemes a forged announcement could smuggle in
        raise FetchRefused(f"payload URL scheme is not http(s): {url[:40]!r}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
            while block := response.read(1024 * 1024):
                digest.update(block)
                sink.write(block)
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            raise FetchRefused(f"fetching the payload was refused: HTTP {exc.code}") from None
        raise ConnectionError(f"payload fetch failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"payload fetch failed: {exc}") from None
    sink.flush()
    sink.seek(0)
    return digest.hexdigest()


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
    return run_all


class _Pending:
    """Polled messages per partition in poll order, and which of them are finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order: dict[tuple[str, int], collections.deque[Message]] = {}
        self._done: set[tuple[str, int, int]] = set()
        self._tracked: set[tuple[str, int, int]] = set()

    def add(self, message: Message) -> bool:
        """False when the message is already tracked (polled again while in flight)."""
        ident = (message.topic, message.partition, message.offset)
        with self._lock:
            if ident in self._tracked:
                return False
            self._tracked.add(ident)
            self._order.setdefault((message.topic, message.partition),
                                   collections.deque()).append(message)
            return True

    def finish(self, message: Message) -> None:
        with self._lock:
            self._done.add((message.topic, message.partition, message.offset))

    def committable(self) -> list[Message]:
        """Per partition, the last message of the finished prefix (removed from tracking)."""
        out = []
        with self._lock:
            for queue in self._order.values():
                last = None
                while queue and (ident := (queue[0].topic, queue[0].partition,
                                           queue[0].offset)) in self._done:
                    last = queue.popleft()
                    self._done.discard(ident)
                    self._tracked.discard(ident)
                if last is not None:
                    out.append(last)
        return out


class ValidatorLoop:
    """Runs ``check`` on every announcement of ``service``; see the module docstring."""

    def __init__(self, bus: Bus, service: str, check: Check, group: str | None = None,
                 workers: int = 4, max_attempts: int = 3, retry_delay: float = 1.0) -> None:
        self.bus = bus
        self.service = service
        self.check = check
        self.group = group or f"validator-{service}"
        self.topic = service_topic(service)
        self.name = f"validator-{service}"
        self.workers = workers
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self._producer = bus.producer()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=self.name)
        self._slots = threading.Semaphore(workers)
        self._pending = _Pending()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answered: collections.OrderedDict[str, Verdict] = collections.OrderedDict()
        self._answered_lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, let the running checks finish (up to ``timeout``), commit what
        is finished. Messages abandoned in a retry wait are redelivered later."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._producer.close()

    # the poller ---------------------------------------------------------------------------

    def run(self) -> None:
        consumer = self.bus.consumer(self.group, [self.topic])
        next_commit = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_commit:
                    self._commit(consumer)
                    next_commit = time.monotonic() + COMMIT_INTERVAL
                if not self._slots.acquire(timeout=0.2):
                    continue
                try:
                    message = consumer.poll(0.2)
                except BusUnavailable as exc:
                    logger.warning("%s: bus unavailable (%s); retrying", self.name, exc)
                    message = None
                    self._stop.wait(1.0)
                if message is None or not self._pending.add(message):
                    self._slots.release()
                    continue
                self._pool.submit(self._work, message)
            self._drain(consumer)
        finally:
            consumer.close()

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
        """True when the message is done with (answered or dead-lettered)."""
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                self.handle(decode(message), message)
                return True
            except BusUnavailable as exc:
                attempt -= 1
                logger.warning("%s: request_id=%s bus unavailable (%s); retrying",
                               self.name, message.key, exc)
                self._stop.wait(1.0)
                continue
            except MalformedMessage as exc:
                return self._dead_letter(message, f"malformed announcement: {exc}", attempt)
            except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: request_id=%s attempt %d of %d failed: %s", self.name,
                               message.key, attempt, self.max_attempts, error)
                if attempt >= self.max_attempts:
                    return self._dead_letter(message, error, attempt)
            self._stop.wait(min(MAX_RETRY_DELAY, self.retry_delay * 2 ** (attempt - 1)))
        return False

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
        workdir = tempfile.mkdtemp(prefix=f"{self.name}-")
        try:
            stored = os.path.join(workdir, "stored")
            with open(stored, "w+b") as sink:
                try:
                    sha256 = fetch(url, sink)
                except FetchRefused as exc:
                    return Verdict("failure", str(exc))
            checksums = announcement.get("checksums") or {}
            expected = checksums.get("stored_sha256") or checksums.get("sha256")
            if expected and expected != sha256:
                return Verdict("failure", f"checksum mismatch: fetched {sha256}")
            path = os.path.join(workdir, "payload")
            if announcement.get("compression") == "gzip":
                with gzip.open(stored, "rb") as source, open(path, "wb") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
                os.unlink(stored)
            else:
                os.rename(stored, path)
            with open(path, "rb") as payload:
                return self.check(announcement, payload)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

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
                      failed_at=dt.datetime.now(dt.timezone.utc).isoformat())
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
