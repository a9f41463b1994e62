"""Validation and submission requests:

- ``PUT /api/v1/areas/<uuid>/validate`` with ``{"validator": NAME, "files": [names…]}``
  (in order): 202 with the validation (``scheduled``); the files become ``validating``.
  400 ``unknown_validator`` for a name without ``VALIDATOR_COMMAND_<NAME>``; 404 for a file
  the area does not hold; 409 ``not_checksummed`` for one not checksummed yet or whose
  checksums differ from those declared.
- ``POST /api/v1/areas/<uuid>/submit``: every file must be ``valid`` (409 ``not_validated``
  naming those that are not). Each file is then recorded as an upload (source ``areas``,
  service ``areas``, its area id and name in ``metadata``, its checksums) and given a
  success verdict through the verdict path every intake's payloads take
  (core/verdicts.py): its object moves to perm and ``platform.upload.available``
  announces it (through the outbox); its request id (``request_ids`` in the answer) has a
  status and a timeline (``GET /api/v1/uploads/<request_id>``). With
  ``{"reject_invalid": true}`` the files whose checksums differ from those declared, or
  whose validation failed, are rejected instead (a failure verdict with that reason: the
  object moves to the reject bucket, the upload is ``rejected``; ``rejected`` in the
  answer); files not decided yet still make it 409. 202 the first time, 200 for a
  repeated submission, which repeats the promotion idempotently (a crash halfway through
  is finished by submitting again).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError

from areas import sets
from areas.web import AreaHandler, area_id_of, checked_name
from core.services import Services
from core.verdicts import VerdictHandler
from db import utcnow
from upload.errors import ApiError
from validators.config import validator_config

logger = logging.getLogger(__name__)

SERVICE = "areas"


class ValidateResource(AreaHandler):
    async def put(self, raw_id: str) -> None:
        area_id = area_id_of(raw_id)
        body = self.json_body()
        validator, names = body.get("validator"), body.get("files")
        if not isinstance(validator, str) or not validator:
            raise ApiError("bad_request", "validator: the name of a command validator")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ApiError("bad_request", "files: a list of file names")
        if len(set(names)) != len(names):
            raise ApiError("bad_request", "files: each name once")
        names = [checked_name(name) for name in names]
        if validator not in validator_config(self.services.settings).commands:
            raise ApiError("unknown_validator", f"no command validator {validator!r} "
                           "(VALIDATOR_COMMAND_<NAME>)")
        validation_id = await self.run(sets.start_validation, self.services.database, area_id,
                                       validator, names)
        self.set_status(202)
        self.write_json({"area_id": area_id, "validation_id": validation_id,
                         "validator": validator, "files": names, "state": "scheduled"})


def promote(services: Services, area_id: str, files: list[dict[str, Any]]) -> None:
    """Record each submitted file as an upload, then apply a success verdict to all of
    them (idempotent: a recorded one is not recorded again, a decided one not again)."""
    database, now = services.database, utcnow()
    for file in files:
        row = {
            "request_id": file["request_id"], "service": SERVICE, "category": "file",
            "content_type": "application/octet-stream",
            "filename": file["name"].rsplit("/", 1)[-1], "size": file["size"],
            "sha256": file["checksums"]["sha256"], "sha1": file["checksums"]["sha1"],
            "mime": None, "account": None, "org_id": None, "principal": None,
            "b64_identity": None, "source": "areas", "compression": None,
            "stored_size": None, "stored_sha256": None,
            "metadata": json.dumps({"area_id": area_id, "area_file": file["name"],
                                    "version": file["version"],
                                    "checksums": file["checksums"]}),
            "object_key": file["object_key"], "bucket": "quarantine",
            "note": f"upload area {area_id}: {file['name']}",
        }
        try:
            database.record_upload(row, now, [])
        except IntegrityError:
            pass  # recorded by an earlier submission
    verdicts = VerdictHandler(services.settings, services.storage, database,
                              services.relay.wake)
    verdicts.handle_batch([
        {"request_id": f["request_id"], "validation": f.get("verdict", "success"),
         "area_id": area_id, **({"reason": f["reason"]} if f.get("reason") else {})}
        for f in files])


class SubmitResource(AreaHandler):
    async def post(self, raw_id: str) -> None:
        area_id = area_id_of(raw_id)
        body = self.json_body()
        reject = body.get("reject_invalid", False)
        if not isinstance(reject, bool) or set(body) - {"reject_invalid"}:
            raise ApiError("bad_request", "the body may hold reject_invalid (a boolean)")
        first, files = await self.run(sets.submit, self.services.database, area_id, reject)
        await self.run(promote, self.services, area_id, files)
        logger.info("area %s submitted: %d files", area_id, len(files))
        self.set_status(202 if first else 200)
        self.write_json({"area_id": area_id, "state": "submitted",
                         "request_ids": {f["name"]: f["request_id"] for f in files},
                         "rejected": {f["name"]: f["reason"] for f in files
                                      if f.get("verdict") == "failure"}})
