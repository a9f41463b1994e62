"""The upload areas' workers (role ``checksummer``, part of ``all``): one consumer loop on
``platform.upload.area-checksum`` (consumer group ``area-checksummer``) computes each
stored file version's checksums; another on ``platform.upload.area-work`` (group
``area-worker``) runs validations and deletions, so a long validation never holds up
checksums. Scale checksumming by running more ``checksummer`` processes (Kafka spreads
the topic's partitions over them). Within a process, the jobs fetched at once (up to
``CHECKSUM_BATCH``) are checksummed ``CHECKSUM_FILES`` at a time: a pass keeps a core and
a half busy (its hashing lanes, areas/checksums.py), and a second file fills what the
first leaves idle while it waits for the storage's first bytes or for its last hashes
(bench/areas.py: 1.2-1.3 x the files' MB/s of one at a time on 2 cores). A batch that
fails is handled again one job at a time (core/consumer.py); jobs done already are
skipped then.

At least once and idempotent: a checksum is recorded only for the version it was
computed for, while it is still ``checksumming`` (areas/store.py); a job for a version
that was replaced, or for an area deleted meanwhile (its object gone), is skipped. The
checksums also go on the S3 object as tags (``sha1``, ``sha256``, ``crc32c``,
``s3_etag``) where the driver has tags.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from areas import sets, store
from areas.checksums import checksum_stream
from areas.jobs import CHECKSUM_TOPIC, WORK_TOPIC
from areas.validation import STALLED, SetValidator
from bus import Message
from core import metrics
from core.consumer import ConsumerLoop, MalformedMessage
from core.periodic import Periodic
from core.services import Services
from storage import AREAS_PREFIX, object_age
from storage.direct import direct_uploads, object_tags, prefix_listing

logger = logging.getLogger(__name__)

VALIDATION_WORKERS = 2  # validations run at once per checksummer process
CHECKSUM_FILES = 2  # files checksummed at once per checksummer process
CHECKSUM_BATCH = 2 * CHECKSUM_FILES  # jobs handed over at once (a stop waits for them)


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedMessage(f"{name} missing or not a {kind.__name__}")
    return value


class Checksummer:
    batch_max = CHECKSUM_BATCH

    def __init__(self, services: Services, files: int = CHECKSUM_FILES) -> None:
        self.services = services
        self.pool = ThreadPoolExecutor(files, thread_name_prefix="checksum-file")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def handle_batch(self, batch: Sequence[dict[str, Any]]) -> None:
        """Every job of ``batch``, ``CHECKSUM_FILES`` at a time; the first error is
        raised once all are done (the loop then handles them one by one)."""
        futures = [self.pool.submit(self, data) for data in batch]
        errors = [error for future in futures if (error := future.exception()) is not None]
        if errors:
            raise errors[0]

    def __call__(self, data: dict[str, Any], message: Message | None = None) -> None:
        if data.get("type") != "checksum":
            raise MalformedMessage(f"not a checksum job: {data.get('type')!r}")
        area_id, name = _field(data, "area_id", str), _field(data, "name", str)
        version, key = _field(data, "version", int), _field(data, "object_key", str)
        part_size = _field(data, "part_size", int)
        database = self.services.database
        current = store.current_file(database, area_id, name)
        if current is None or current["version"] != version \
                or current["checksum_state"] != "checksumming":
            logger.info("area %s: %s v%d needs no checksums (replaced, deleted or done)",
                        area_id, name, version)
            metrics.AREA_CHECKSUMS.labels("skipped").inc()
            return
        started = time.monotonic()
        try:
            with self.services.storage.open_reader("quarantine", key) as stream:
                checksums, size = checksum_stream(stream, part_size)
        except FileNotFoundError:
            logger.info("area %s: %s v%d is gone (deleted or replaced); skipped", area_id,
                        name, version)
            metrics.AREA_CHECKSUMS.labels("skipped").inc()
            return
        metrics.AREA_CHECKSUM_SECONDS.observe(time.monotonic() - started)
        metrics.AREA_CHECKSUM_BYTES.inc(size)
        state = "checksummed" if self._matches(current["declared"], checksums) \
            else "checksum_mismatch"
        tagger = object_tags(self.services.storage)
        if tagger is not None:
            try:
                tagger.tag_object("quarantine", key, checksums)
            except FileNotFoundError:
                return
        recorded = store.record_checksums(database, area_id, name, version, checksums, state)
        metrics.AREA_CHECKSUMS.labels(state if recorded else "skipped").inc()
        logger.info("area %s: %s v%d %s (%d bytes, sha256 %s)%s", area_id, name, version,
                    state, size, checksums["sha256"], "" if recorded else "; not recorded")

    @staticmethod
    def _matches(declared_json: str, checksums: dict[str, str]) -> bool:
        declared = json.loads(declared_json)
        return all(checksums[k] == v for k, v in declared.items() if k in checksums)


class AreaWork:
    """Validations (areas/validation.py) and deletions from ``platform.upload.area-work``."""

    def __init__(self, services: Services, workers: int = VALIDATION_WORKERS) -> None:
        self.services = services
        self.validate = SetValidator(services)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="area-validation")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __call__(self, data: dict[str, Any], message: Message | None = None) -> None:
        kind = data.get("type")
        area_id = _field(data, "area_id", str)
        if kind == "delete":
            self.delete(area_id)
        elif kind == "validate":
            validation_id = _field(data, "validation_id", str)
            self.pool.submit(self._run_validation, area_id, validation_id)
        else:
            raise MalformedMessage(f"unknown area job type {kind!r}")

    def _run_validation(self, area_id: str, validation_id: str) -> None:
        try:
            self.validate(area_id, validation_id)
        except Exception:  # noqa: BLE001 - the sweeper runs it again once it looks stalled
            logger.exception("area %s: validation %s failed", area_id, validation_id)

    def delete(self, area_id: str) -> None:
        database, storage = self.services.database, self.services.storage
        area = store.get_area(database, area_id)
        if area is None or area["state"] != "deleting":
            return
        keys, uploads = store.deletion_leftovers(database, area_id)
        direct = direct_uploads(storage)
        if direct is not None:
            for key, state in uploads:
                direct.abort_direct("quarantine", key, state)
            for key, state, _ in list(direct.list_direct("quarantine",
                                                         f"{AREAS_PREFIX}{area_id}/")):
                direct.abort_direct("quarantine", key, state)
        listing = prefix_listing(storage)
        if listing is not None:
            keys += list(listing.list_prefix("quarantine", f"{AREAS_PREFIX}{area_id}/"))
        for key in dict.fromkeys(keys):
            storage.delete("quarantine", key)
        if store.finish_delete(database, area_id):
            logger.info("area %s deleted (%d objects)", area_id, len(set(keys)))


class UploadSweeper(Periodic):
    """Every minute: validations whose worker died go back to ``scheduled`` with a new
    job (areas/validation.py); and abandoned direct uploads: one whose part URLs expired
    (``URL_EXPIRY``) an hour ago and that was never completed is aborted and forgotten;
    an unfinished multipart upload under ``areas/`` that no row names (a gateway that
    died between starting it and recording it) is aborted once it is as old. The general
    clean-up leaves ``areas/`` to this (storage/direct.py)."""

    GRACE = 3600.0

    name = "area-upload-sweeper"

    def __init__(self, services: Services, interval: float = 60.0) -> None:
        super().__init__()
        self.services = services
        self.interval = interval

    def tick(self) -> None:
        self.sweep_validations()
        self.sweep()

    def sweep_validations(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        cutoff = dt.datetime.fromtimestamp(now - STALLED, dt.UTC)
        requeued = sets.requeue_stalled(self.services.database, cutoff)
        for validation_id in requeued:
            logger.warning("validation %s: its worker went silent; scheduled again",
                           validation_id)
        return requeued

    def sweep(self, now: float | None = None) -> int:
        direct = direct_uploads(self.services.storage)
        if direct is None:
            return 0
        now = time.time() if now is None else now
        max_age = self.services.settings.url_expiry + self.GRACE
        cutoff = dt.datetime.fromtimestamp(now - max_age, dt.UTC)
        swept = 0
        for upload in store.stale_uploads(self.services.database, cutoff):
            direct.abort_direct("quarantine", upload["object_key"],
                                json.loads(upload["storage_state"]))
            # completed but never recorded (its area was locked then): no file names it
            self.services.storage.delete("quarantine", upload["object_key"])
            store.remove_upload(self.services.database, upload["id"])
            logger.info("area %s: direct upload %s of %s abandoned; aborted", upload["area_id"],
                        upload["id"], upload["name"])
            swept += 1
        old = [(key, state) for key, state, started in direct.list_direct("quarantine",
                                                                         AREAS_PREFIX)
               if object_age(key, now - started, now) > max_age]
        known = store.open_upload_keys(self.services.database, [key for key, _ in old])
        for key, state in old:
            if key not in known:
                direct.abort_direct("quarantine", key, state)
                swept += 1
        return swept


class AreaWorkers:
    """The ``checksummer`` role: both loops, and the sweeper of abandoned direct uploads."""

    def __init__(self, services: Services) -> None:
        self.sweeper = UploadSweeper(services)
        self.checksummer = Checksummer(services)
        self.work = AreaWork(services)
        self.loops = [
            ConsumerLoop(services.bus, "area-checksummer", [CHECKSUM_TOPIC], self.checksummer,
                         name="area-checksummer"),
            ConsumerLoop(services.bus, "area-worker", [WORK_TOPIC], self.work,
                         name="area-worker"),
        ]

    def start(self) -> None:
        for loop in self.loops:
            loop.start()
        self.sweeper.start()

    def stop(self) -> None:
        self.sweeper.stop()
        for loop in self.loops:
            loop.stop()
        self.work.close()
        self.checksummer.close()
