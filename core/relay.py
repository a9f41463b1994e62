"""The outbox relay: delivers messages recorded in the database to the bus.

It runs in its own thread. A batch is leased from the outbox, sent, and deleted once the
broker has acknowledged it, in the transaction that leases the next batch (one commit per
pass). A relay that crashes in between leaves its batch claimed and unrecorded; whoever
claims it next (``outbox.sent_since`` set) reads the topics from the first claim on and
sends only what is not there (``_look_on_bus``), so a SIGKILL does not duplicate
``platform.upload.available``. When the bus cannot be read the look is retried later, up to
``MAX_LOOKS`` times, then the messages are sent (at least once). What was not
acknowledged is retried with exponential backoff (0.2 s doubling to ``MAX_BACKOFF``). The
retry state lives in the database, not in memory, so a restart or a broker outage loses
nothing. ``wake()`` lets the ingest path start a delivery at once instead of waiting for
the next poll.

A lease (``LEASE``, 30 s) that runs out makes its messages claimable by any relay: the
one that held it died. It also runs out while the database is down, for a relay that is
alive and holds the broker's acknowledgements of its batch, to be recorded once the
database is back; another relay claiming that batch first sent it again (a duplicate on
``platform.upload.available`` after every outage longer than the lease). So a relay that
found the database down holds off, from the outage until ``HOLD`` (10 s) after its
first pass that succeeds again, the leases that ran out after the outage began (less a
lease, for a relay that noticed late): their relays, if alive, record them meanwhile;
those of a relay that died are claimed after the hold.

A relay does not wait for the lease of a relay that died: each relay holds a lock of its
own while it lives and marks its claims with its id, and the unexpired leases of an id
whose lock is gone are claimed at once. On PostgreSQL the lock is an advisory lock, gone
for ``db.presence.GRACE`` (3 s) (db/presence.py says why the grace, and how a live relay
that lost its lock connection re-takes it); on SQLite a ``flock`` on a file beside the
database, which only the holder's death releases. A hold covers those leases too.

A message the bus refuses for good (``bus.Refused``: larger than the broker's message size
limit, invalid) is parked on its own (``outbox.parked_at``, its reason in ``last_error``,
``gateway_outbox_parked_total``, an error logged with its request_id) and never claimed
again; the rest of its batch is delivered or retried as usual.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Sequence

from sqlalchemy.exc import DBAPIError

from bus import Bus, BusUnavailable, OutMessage, Producer, Refused
from bus.topics import VALIDATION
from core import metrics
from db import Database, OutboxRow, utcnow

logger = logging.getLogger(__name__)

BATCH = 200
POLL_INTERVAL = 0.2
# after a partial batch of at least LINGER_FROM messages, wait LINGER before claiming the
# next one: in a burst (the watcher's thousands of files) batches grow instead of costing
# three write transactions per handful of messages. A smaller batch is a trickle: the next
# pass starts at once, because at a steady 100 uploads/s a message meets the relay twice on
# its way to `available` and lingering after every handful added up to 2 x LINGER to it
# (bench/latency.py, embedded: p50 25-28 ms, p99 55-81 ms with a linger after every
# partial batch; p50 13-16 ms, p99 25-36 ms in most runs with this threshold).
LINGER = 0.01
LINGER_FROM = 8
SEND_TIMEOUT = 10.0
MAX_BACKOFF = 30.0
LEASE = 30.0
HOLD = 10.0
# looking on the bus for messages a dead relay may have sent (``_look_on_bus``): from its
# claim less this much (clocks of different hosts, producers' stamps out of order), for
# at most LOOK_TIMEOUT seconds per topic
CLOCK_SLACK = 30.0
LOOK_TIMEOUT = 30.0
MAX_LOOKS = 5


def headers(topic: str, value: bytes) -> tuple[tuple[str, bytes], ...]:
    """Kafka record headers of a message about a payload (``platform.upload.*``): ``service``
    as the Insights ingress service sets it (consumers route on it without parsing), and
    the W3C ``traceparent`` the upload came with."""
    if not topic.startswith("platform.upload.") or topic == VALIDATION:
        return ()
    try:
        data = json.loads(value)
    except ValueError:
        return ()
    if not isinstance(data, dict):
        return ()
    found = []
    for name in ("service", "traceparent"):
        if isinstance(data.get(name), str):
            found.append((name, data[name].encode()))
    return tuple(found)


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF, 0.2 * 2 ** attempts))


class OutboxRelay:
    def __init__(self, database: Database, bus: Bus, send_timeout: float = SEND_TIMEOUT,
                 lease: float = LEASE, hold: float = HOLD) -> None:
        self.database = database
        self.bus = bus
        self.send_timeout = send_timeout
        self.lease = lease
        self.hold = hold
        self._down_since: dt.datetime | None = None  # the database, as this relay saw it
        self._held_after: dt.datetime | None = None  # leases run out after this are held
        self._hold_until = 0.0  # time.monotonic() the hold ends
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._depth_at = 0.0
        self._sent: list[OutboxRow] = []  # acknowledged, recorded by the next pass
        self._failing_since: float | None = None  # an outage: logged once (core/health.py)
        self._presence = database.relay_presence()  # see db/presence.py

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._presence is not None:
            self._presence.start()
        self._thread = threading.Thread(target=self.run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Deliver what is due (bounded by ``timeout``), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._presence is not None:
            self._presence.close()

    def run(self) -> None:
        producer = self.bus.producer()
        try:
            while True:
                try:
                    delivered = self.deliver_once(producer)
                except Exception:  # noqa: BLE001 - the relay must outlive a bad moment
                    logger.exception("outbox relay pass failed; retrying")
                    delivered = 0
                    self._stop.wait(1.0)
                if self._stop.is_set() and not delivered:
                    break
                if not delivered:
                    self._wake.wait(POLL_INTERVAL)
                    self._wake.clear()
                elif LINGER_FROM <= delivered < BATCH:
                    self._stop.wait(LINGER)
        finally:
            producer.close()

    def deliver_once(self, producer: Producer) -> int:
        """Record the previous pass's deliveries and send one batch; returns how many
        messages were delivered."""
        rows = self._sent_and_claim()
        self._sent = []
        if not rows:
            self._report_depth()
            return 0
        there: list[OutboxRow] = []
        if any(row.sent_since is not None for row in rows):
            there, rows = self._look_on_bus(rows)
            if not rows:  # all on the bus already: delivered as if sent now
                self._sent = there
                for row in there:
                    metrics.OUTBOX_DELIVERED.labels(row.topic).inc()
                return len(there)
        messages = [OutMessage(r.topic, r.key, r.value, headers(r.topic, r.value)) for r in rows]
        started = time.monotonic()
        try:
            acked = producer.send(messages, self.send_timeout)
        except BusUnavailable as exc:
            acked = [False] * len(rows)
            error = str(exc)
        else:
            error = "not acknowledged in time"
        metrics.STAGE_SECONDS.labels("relay_send").observe(time.monotonic() - started)
        sent = [row for row, ok in zip(rows, acked) if ok] + there
        refused = [(row, ok) for row, ok in zip(rows, acked) if isinstance(ok, Refused)]
        failed = [row for row, ok in zip(rows, acked) if not ok and not isinstance(ok, Refused)]
        self._sent = sent
        if refused:
            self._park(refused)
        self._report_depth()
        if sent and self._failing_since is not None:
            logger.info("bus takes messages again after %.0fs", time.monotonic()
                        - self._failing_since)
            self._failing_since = None
        for row in sent:
            metrics.OUTBOX_DELIVERED.labels(row.topic).inc()
            logger.debug("request_id=%s delivered to %s", row.request_id, row.topic)
        if failed:
            self._retry_later(failed, error)
            self._depth_at = 0.0
            self._report_depth()
        return len(sent)

    def _sent_and_claim(self) -> list[OutboxRow]:
        """Record the previous batch's deliveries and claim the next batch, holding off
        the leases that ran out during a database outage (see the module's docstring)."""
        if self._down_since is not None:
            held_after: dt.datetime | None = self._down_since - dt.timedelta(seconds=self.lease)
        elif self._held_after is not None and time.monotonic() < self._hold_until:
            held_after = self._held_after
        else:
            held_after = self._held_after = None
        try:
            rows = self.database.outbox_sent_and_claim(self._sent, BATCH, self.lease, held_after,
                                                       self._presence)
        except DBAPIError:
            if self._presence is not None:
                self._presence.forget()
            if self._down_since is None:
                self._down_since = utcnow()
            raise
        if self._down_since is not None:
            self._held_after = held_after
            self._hold_until = time.monotonic() + self.hold
            self._down_since = None
        return rows

    def _look_on_bus(self, rows: list[OutboxRow]) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """Split the claimed ``rows`` into those on the bus already and those to send.

        A row claimed before (``sent_since``) and never recorded sent or failed may have
        been sent by its earlier claimer, which died between the broker's acknowledgement
        and its next pass (a SIGKILLed gateway: issue 10's "0 duplicates on available").
        Its topic is read from then (less ``CLOCK_SLACK``); a copy found counts as this
        pass's delivery. Rows the bus could not be read for are left for later, still
        marked, so whoever claims them next looks again."""
        fresh = [row for row in rows if row.sent_since is None]
        by_topic: dict[str, list[OutboxRow]] = {}
        for row in rows:
            if row.sent_since is not None:
                by_topic.setdefault(row.topic, []).append(row)
        there: list[OutboxRow] = []
        unread: list[OutboxRow] = []
        error = ""
        for topic, claimed in by_topic.items():
            since = min(row.sent_since for row in claimed if row.sent_since is not None)
            started = time.monotonic()
            try:
                found = self.bus.delivered(topic, [(row.key, row.value) for row in claimed],
                                           since.timestamp() - CLOCK_SLACK, LOOK_TIMEOUT)
            except BusUnavailable as exc:
                if min(row.attempts for row in claimed) < MAX_LOOKS:
                    unread.extend(claimed)
                    error = f"could not look on the bus: {exc}"
                    continue
                logger.warning("could not look on %s for %d messages an earlier relay may "
                               "have sent (%s); sending them, maybe again", topic,
                               len(claimed), exc)
                fresh.extend(claimed)
                continue
            logger.info("looked on %s for %d messages an earlier relay claimed since %s and "
                        "did not record: %d there already, %d to send (%.2fs)", topic,
                        len(claimed), since.isoformat(timespec="seconds"), len(found),
                        len(claimed) - len(found), time.monotonic() - started)
            for index, row in enumerate(claimed):
                if index in found:
                    there.append(row)
                    logger.info("request_id=%s message to %s is on the bus already; not sent "
                                "again", row.request_id or "-", topic)
                else:
                    fresh.append(row)
        if unread:
            self._retry_later(unread, error, looked=False)
        fresh.sort(key=lambda row: row.id)  # a key's messages keep their order
        return there, fresh

    def _park(self, refused: Sequence[tuple[OutboxRow, Refused]]) -> None:
        """Messages the bus will never take are set aside, each on its own: the others
        of the batch, and those behind it, go on."""
        for row, result in refused:
            metrics.OUTBOX_PARKED.labels(row.topic).inc()
            logger.error("request_id=%s message to %s (%d bytes) refused by the bus and "
                         "parked: %s", row.request_id or "-", row.topic, len(row.value),
                         result.reason)
        self.database.outbox_park([row for row, _ in refused],
                                  [result.reason for _, result in refused])

    def _retry_later(self, failed: Sequence[OutboxRow], error: str, looked: bool = True) -> None:
        metrics.OUTBOX_FAILURES.inc()
        delay = backoff(min(row.attempts for row in failed))
        # the first failure of an outage is a warning; the health monitor reports how it
        # goes on (its duration, the outbox depth) every minute
        first = self._failing_since is None
        if first:
            self._failing_since = time.monotonic()
        logger.log(logging.WARNING if first else logging.DEBUG,
                   "bus did not take %d messages (%s); they stay in the outbox, retrying "
                   "in %.1fs", len(failed), error, delay)
        self.database.outbox_retry_later(failed, delay, error, looked)

    def _report_depth(self) -> None:
        """Count the outbox at most once a second: the count is a table scan."""
        now = time.monotonic()
        if now - self._depth_at >= 1.0:
            self._depth_at = now
            metrics.OUTBOX_DEPTH.set(self.database.outbox_depth())

