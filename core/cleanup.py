"""Clean-up of what crashed writers left behind: half-written objects (temporary files,
unfinished multipart uploads) and quarantine objects that no upload references (stored,
but the process died before its database commit, so no client got a 202).

Only what is certainly abandoned goes. An upload records its object within
``INGEST_DEADLINE`` seconds of opening it, or not at all: its record transaction fails
(``db.RecordTooLate``, a 503 for the client) rather than commit later (core/ingest.py).
So an object older than ``INGEST_DEADLINE`` plus ``AGE_SLACK`` (ages as
``storage.object_age`` tells them: the backend's clock, and the key's) belongs to no
upload still under way; among those, the ones that no upload references are read behind
the database fence (``db.fence``), which no record transaction is inside at that moment,
so an upload committing slowly (a lock held for a while) is either seen or will fail its
deadline. Neighbouring gateways' uploads in flight, on a shared S3 or a shared WORKDIR,
are younger than that and left alone. Resumable (tus) objects and upload areas' objects
(``storage.owned``) are their owner's.

Each gateway runs a pass at start-up and then every ``INGEST_DEADLINE`` seconds (at least
5, at most 3600): what a crash leaves is removed once it is old enough.
"""
from __future__ import annotations

import logging
import threading

from core.settings import Settings
from db import Database
from storage import Storage, owned

logger = logging.getLogger(__name__)

# S3's LastModified, Initiated and Date have a resolution of one second each
AGE_SLACK = 2.0


class Cleanup:
    def __init__(self, settings: Settings, storage: Storage, database: Database) -> None:
        self.storage = storage
        self.database = database
        self.min_age = settings.ingest_deadline + AGE_SLACK
        self.interval = min(3600.0, max(5.0, settings.ingest_deadline))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="cleanup", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def run(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - storage or database down: next pass
                logger.exception("clean-up pass failed; trying again in %.0fs", self.interval)
            if self._stop.wait(self.interval):
                return

    def run_once(self) -> int:
        """One pass; returns how many objects and writes it removed."""
        incomplete = self.storage.cleanup_incomplete(self.min_age)
        aged = dict(self.storage.list_aged("quarantine"))
        old = {key for key, age in aged.items()
               if age > self.min_age and not owned(key)}
        orphans = self.database.unreferenced_keys(old)
        for key in sorted(orphans):
            logger.warning("removing quarantine object %s: no upload references it, %.0fs old",
                           key, aged[key])
            self.storage.delete("quarantine", key)
        logger.info("clean-up pass: removed %d incomplete writes and %d unreferenced objects "
                    "older than %.0fs (%d quarantine objects, %d that old)", incomplete,
                    len(orphans), self.min_age, len(aged), len(old))
        return incomplete + len(orphans)
