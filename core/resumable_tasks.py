"""Work on resumable uploads that no client request drives: concatenating partial uploads
into a final one, and the sweeper (expiry, unfinished completions, leftovers).

Concatenation copies the partials' stored bytes, in order, into the final upload's own
resumable object through a ``Session`` (so the final payload is hashed as it is copied,
and checkpointed every ``CHECKPOINT_BYTES``), then finishes it like any upload. The
request that creates the final upload holds the leases of the final and of every partial
while it copies; partials are removed once the final payload is recorded. A gateway that
dies while copying leaves the final ``receiving``: the sweeper continues it from its last
checkpoint.

The sweeper (one thread per gateway, every ``SWEEP_SECONDS``; any number of gateways may
run one: every action takes the upload's lease first):
- expires uploads still receiving past their ``expires_at``, and partials nobody
  concatenated (their stored bytes removed, their URL answers 410);
- finishes uploads left ``complete`` or final uploads left half-copied by a request or
  gateway that went away (lease free, untouched for two lease periods);
- discards incomplete storage objects that no open upload owns (a gateway that died
  after starting a multipart upload it never recorded), once they are an hour old. Other
  owners of resumable quarantine objects (the puller's downloads, pull/download.py) name
  theirs through ``owners``.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from typing import Any, Callable, Sequence

from core.ingest import BLOCK
from core.periodic import Periodic
from core.resumable import Lease, LeaseLost, Resumable

logger = logging.getLogger(__name__)

CHECKPOINT_BYTES = 64 * 1024 * 1024
SWEEP_SECONDS = 30.0
STALE_LEASES = 2  # an unfinished upload is stale after this many leases untouched
LEFTOVER_SECONDS = 3600.0


class PartialsLease(Lease):
    """The final upload's lease, renewing the partials' with it."""

    def __init__(self, lease: Lease, partial_ids: list[str]) -> None:
        super().__init__(lease.database, lease.tus_id, lease.token, lease.ttl)
        self.partial_ids = partial_ids

    def check(self) -> None:
        due = self.due
        super().check()
        if due:
            for partial_id in self.partial_ids:
                if not self.database.renew_tus(partial_id, self.token, self.ttl):
                    raise LeaseLost(f"partial upload {partial_id} was taken over")


def concatenate(resumable: Resumable, final: dict[str, Any], token: str,
                partials: list[dict[str, Any]]) -> bool:
    """Copy ``partials`` (complete, leased to ``token`` like ``final``) into ``final``
    from its recorded offset, finish it, then remove the partials. Blocking."""
    session = resumable.open(final, token)
    session.lease = PartialsLease(session.lease, [p["id"] for p in partials])
    try:
        position = 0
        for partial in partials:
            start, position = position, position + int(partial["upload_length"])
            if position > session.offset:
                _copy(resumable, partial["object_key"], session.offset - start, session)
        if session.offset != final["upload_length"]:
            raise FileNotFoundError(f"partial uploads of {final['id']} hold {session.offset} "
                                    f"bytes, not {final['upload_length']}")
        session.checkpoint(release=False)
        row = session.row
    finally:
        session.close()
    finished = resumable.finish(row, token)
    for partial in partials:
        resumable.end(partial, token, "terminated", f"concatenated into {final['id']}")
    return finished


def _copy(resumable: Resumable, key: str, skip: int, session: Any) -> None:
    reader = resumable.storage_reader(key)
    try:
        while skip > 0:  # resuming inside this partial (a restart mid-copy)
            dropped = len(reader.read(min(skip, BLOCK)))
            if not dropped:
                return
            skip -= dropped
        while block := reader.read(BLOCK):
            session.write(block)
            if session.offset - session.before >= CHECKPOINT_BYTES:
                session.checkpoint(release=False)
    finally:
        reader.close()


class ResumableSweeper(Periodic):
    name = "tus-sweeper"
    join_timeout = 30.0

    def __init__(self, resumable: Resumable, interval: float = SWEEP_SECONDS,
                 owners: Sequence[Callable[[list[str]], set[str]]] = ()) -> None:
        super().__init__()
        self.resumable = resumable
        self.owners = owners  # each: the subset of the keys given that it still owns
        self.database = resumable.database
        self.interval = interval
        self._passes = 0

    def tick(self) -> None:
        self.sweep()

    def sweep(self, now: dt.datetime | None = None) -> int:
        """One pass; returns how many uploads it acted on."""
        now = now or dt.datetime.now(dt.UTC)
        stale = now - dt.timedelta(seconds=STALE_LEASES * self.resumable.lease_seconds)
        acted = 0
        for row in self.database.tus_due(now, stale):
            try:
                acted += self._handle(row, now)
            except Exception:  # noqa: BLE001 - one upload's trouble must not stop the rest
                logger.exception("request_id=%s tus upload %s: sweeper could not handle it",
                                 row["request_id"] or "-", row["id"])
        if self._passes % 10 == 0:
            acted += self.discard_leftovers(time.time() - LEFTOVER_SECONDS)
        self._passes += 1
        return acted

    def _handle(self, row: dict[str, Any], now: dt.datetime) -> int:
        token = secrets.token_hex(16)
        resumable = self.resumable
        expires_at = row["expires_at"]
        expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=dt.UTC)
        if row["state"] == "complete":
            leased = resumable.acquire(row["id"], token, ("complete",))
            return int(leased is not None and resumable.finish(leased, token))
        if row["kind"] == "final" and row["state"] == "receiving" and expires_at > now:
            leased = resumable.acquire(row["id"], token, ("receiving",))
            if leased is None:
                return 0
            partials = resumable.lease_partials(leased, token)
            if partials is None:
                resumable.release(row["id"], token)
                return 0
            return int(concatenate(resumable, leased, token, partials))
        leased = resumable.acquire(row["id"], token, (row["state"],))
        if leased is None:
            return 0
        return int(resumable.end(leased, token, "expired", "expired before it was completed"))

    def discard_leftovers(self, older_than: float) -> int:
        storage = self.resumable.storage
        found = {key: started for key, started in storage.list_resumable("quarantine")
                 if started < older_than}
        if not found:
            return 0
        live = self.database.live_tus_keys(list(found))
        for owner in self.owners:
            live |= owner(list(found))
        for key in set(found) - live:
            logger.warning("discarding incomplete resumable object %s that no upload owns", key)
            storage.discard_resumable("quarantine", key)
        return len(set(found) - live)
