"""One loop for every consumer of the bus: poll, decode, handle, commit.

At least once: the offset is committed only after the handler returned, so its side
effects are durable first. A message that is not a JSON object, or that the handler finds
malformed (``MalformedMessage``), is logged, counted and skipped. A transient failure
(storage, bus or database unavailable) is retried with backoff on the same message, so
nothing behind it overtakes it; any other error is retried ``MAX_ATTEMPTS`` times and then
skipped with the traceback logged, so that one poison message cannot stop the loop.
Each handled message is ``store``d (committed before a rebalance takes its partition); a
commit the bus refuses now is tried again a second later while the loop keeps polling and
handling (a member that sleeps through a rebalance is dropped from its group).

With a ``batch_handler`` (by default the handler's ``handle_batch`` method, if it has
one: the verdict handler, the area checksummer), what is already fetched (up to
``BATCH_MAX`` messages, or the handler's ``batch_max``) is handed over at once, so that
its side effects can share one transaction (or run at once); if the batch fails in any
way, its messages are handled one by one by ``handler`` as above (handlers are
idempotent, so what the batch did already is harmless).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Sequence

from sqlalchemy.exc import DBAPIError

from bus import Bus, BusUnavailable, Message
from core import metrics
from storage import StorageUnavailable

logger = logging.getLogger(__name__)

TRANSIENT = (StorageUnavailable, BusUnavailable, DBAPIError, ConnectionError, TimeoutError)
MAX_ATTEMPTS = 5
# Offsets are committed every COMMIT_EVERY messages or COMMIT_INTERVAL seconds after the
# first uncommitted one was handled, busy or idle, instead of after each one (a commit of
# the embedded bus is an fsynced transaction that every writer of the file queues behind,
# a Kafka commit a broker round-trip). At least once either way: what was handled but not
# committed is handled again.
COMMIT_EVERY = 50
COMMIT_INTERVAL = 0.1
COMMIT_RETRY = 1.0  # seconds before a commit the bus refused is tried again
BATCH_MAX = 100

Handler = Callable[[dict[str, Any], Message], None]
BatchHandler = Callable[[Sequence[dict[str, Any]]], None]


class MalformedMessage(ValueError):
    """The message can never be handled; it is skipped."""


def decode(message: Message) -> dict[str, Any]:
    try:
        data = json.loads(message.value)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage("not a JSON object")
    return data


class ConsumerLoop:
    def __init__(self, bus: Bus, group: str, topics: Sequence[str], handler: Handler,
                 name: str | None = None, batch_handler: BatchHandler | None = None) -> None:
        self.bus = bus
        self.group = group
        self.topics = list(topics)
        self.handler = handler
        self.batch_handler = batch_handler or getattr(handler, "handle_batch", None)
        self.batch_max: int = getattr(handler, "batch_max", BATCH_MAX)
        self.name = name or group
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        consumer = self.bus.consumer(self.group, self.topics)
        # handled but not yet committed: the last message of each partition
        done: dict[tuple[str, int], Message] = {}
        count, oldest = 0, 0.0
        try:
            while not self._stop.is_set():
                due = oldest + COMMIT_INTERVAL - time.monotonic() if done else 0.2
                try:
                    message = consumer.poll(max(0.0, min(due, 0.2)))
                except BusUnavailable as exc:
                    logger.warning("%s: bus unavailable (%s); retrying", self.name, exc)
                    self._stop.wait(1.0)
                    continue
                if message is None:
                    if done and time.monotonic() - oldest >= COMMIT_INTERVAL:
                        count, oldest = self._commit_all(consumer, done)
                    continue
                if self.batch_handler is None:
                    handled = [message] if self._handle(message) else []
                else:
                    handled = self._handle_batch(self._more(consumer, message))
                for message in handled:
                    consumer.store(message)  # committed before a rebalance takes it
                    if not done:
                        count, oldest = 0, time.monotonic()
                    done[(message.topic, message.partition)] = message
                    count += 1
                if done and (count >= COMMIT_EVERY
                             or time.monotonic() - oldest >= COMMIT_INTERVAL):
                    count, oldest = self._commit_all(consumer, done)
        finally:
            self._commit_final(consumer, done)
            consumer.close()

    def _commit_all(self, consumer: Any, done: dict[tuple[str, int], Message]
                    ) -> tuple[int, float]:
        """Commit the last handled message of each partition, once. What the bus could
        not take now stays in ``done`` for another try in ``COMMIT_RETRY`` seconds, while
        the loop goes on polling (a member that sleeps instead is dropped from its group in
        a rebalance) and handling (a later commit of the partition covers it); returns the
        loop's new (count, oldest)."""
        for key, message in list(done.items()):
            try:
                consumer.commit(message)
            except BusUnavailable as exc:
                logger.warning("%s: commit failed (%s); retrying in %.0fs, polling meanwhile",
                               self.name, exc, COMMIT_RETRY)
                break
            del done[key]
        if done:
            return 0, time.monotonic() + COMMIT_RETRY - COMMIT_INTERVAL
        return 0, 0.0

    def _commit_final(self, consumer: Any, done: dict[tuple[str, int], Message]) -> None:
        """One attempt each at stop; what fails comes back to the next member."""
        for message in list(done.values()):
            try:
                consumer.commit(message)
            except BusUnavailable as exc:
                logger.warning("%s: final commit failed (%s)", self.name, exc)
        done.clear()

    def _more(self, consumer: Any, first: Message) -> list[Message]:
        """``first`` and what else is ready at once (up to ``batch_max``)."""
        batch = [first]
        while len(batch) < self.batch_max:
            try:
                message = consumer.poll(0)
            except BusUnavailable:
                break
            if message is None:
                break
            batch.append(message)
        return batch

    def _handle_batch(self, batch: list[Message]) -> list[Message]:
        """The messages done with, in order: a prefix of ``batch`` (all of it unless the
        loop is stopping)."""
        assert self.batch_handler is not None
        decoded: dict[int, dict[str, Any]] = {}
        for index, message in enumerate(batch):
            try:
                decoded[index] = decode(message)
            except MalformedMessage as exc:
                self._skip(message, "malformed", str(exc))
        try:
            if decoded:
                self.batch_handler(list(decoded.values()))
            return batch
        except Exception as exc:  # noqa: BLE001 - one by one now, with retries and skips
            logger.info("%s: batch of %d failed (%s: %s); handling one by one", self.name,
                        len(decoded), type(exc).__name__, exc)
        for index, message in enumerate(batch):
            if index in decoded and not self._handle(message):
                return batch[:index]
        return batch

    def _handle(self, message: Message) -> bool:
        """True when the message is done with (handled or skipped) and may be committed."""
        attempt = 0
        while not self._stop.is_set():
            try:
                self.handler(decode(message), message)
                return True
            except MalformedMessage as exc:
                self._skip(message, "malformed", str(exc))
                return True
            except TRANSIENT as exc:
                delay = min(10.0, 0.2 * 2 ** attempt)
                logger.warning("%s: key=%s transient failure (%s); retry in %.1fs",
                               self.name, message.key, exc, delay)
            except Exception:  # noqa: BLE001 - a bug must not stop every later message
                logger.exception("%s: key=%s handler failed (attempt %d)",
                                 self.name, message.key, attempt + 1)
                if attempt + 1 >= MAX_ATTEMPTS:
                    self._skip(message, "handler_error", "gave up")
                    return True
                delay = min(10.0, 0.2 * 2 ** attempt)
            attempt += 1
            self._stop.wait(delay)
        return False

    def _skip(self, message: Message, reason: str, detail: str) -> None:
        metrics.SKIPPED_MESSAGES.labels(message.topic, reason).inc()
        logger.warning("%s: skipped message key=%s on %s offset %d: %s (%s)", self.name,
                       message.key, message.topic, message.offset, reason, detail)

