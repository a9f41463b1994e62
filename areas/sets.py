"""Validations and submission of an area's files as a set (queries; tables in
``areas.schema``). Like areas/store.py: one transaction per function, notifications and
work in the outbox of that transaction, results recorded by file version."""
from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Sequence

from sqlalchemy import insert, select, update

from areas import jobs
from areas.schema import area_files, area_validations, areas
from areas.store import GONE, AreaError, _event, _locked_area, validation_view
from core import metrics
from db import Database, utcnow

FINAL = ("valid", "invalid", "stale")


def _files(conn: Any, area_id: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(area_files).where(area_files.c.area_id == area_id)
                        .where(area_files.c.name.in_(list(names)))).mappings()
    return {r["name"]: dict(r) for r in rows}


def start_validation(database: Database, area_id: str, validator: str,
                     names: Sequence[str]) -> str:
    """Schedule ``validator`` over ``names`` (in that order); their files become
    ``validating``. ``AreaError``: an unknown file (404), one not checksummed or whose
    checksums do not match what was declared (409 ``not_checksummed``)."""
    validation_id, now = uuid.uuid4().hex, utcnow()
    with database.engine.begin() as conn:
        area = _locked_area(conn, area_id)
        if area["state"] in GONE or area["state"] == "submitted":
            raise AreaError("area_submitted" if area["state"] == "submitted"
                            else "area_deleting", f"the area is {area['state']}")
        files = _files(conn, area_id, names)
        missing = [n for n in names if n not in files]
        if missing:
            raise AreaError("not_found", f"no such files: {', '.join(missing)}")
        unready = [n for n in names if files[n]["checksum_state"] != "checksummed"]
        if unready:
            raise AreaError("not_checksummed", "not checksummed (or checksums differ from "
                            f"those declared): {', '.join(unready)}")
        conn.execute(insert(area_validations).values(
            id=validation_id, area_id=area_id, validator=validator,
            files=json.dumps([[n, files[n]["version"]] for n in names]), state="scheduled",
            created_at=now, updated_at=now))
        for name in names:
            conn.execute(update(area_files).where(area_files.c.id == files[name]["id"])
                         .values(validation_state="validating", validation_id=validation_id,
                                 updated_at=now))
        database.enqueue(conn, [_event(conn, area_id, "validating", validation_id=validation_id,
                                       files=list(names), validator=validator),
                                jobs.validate_job(area_id, validation_id)])
    return validation_id


def get_validation(database: Database, validation_id: str) -> dict[str, Any] | None:
    with database.engine.connect() as conn:
        found = conn.execute(select(area_validations)
                             .where(area_validations.c.id == validation_id)).mappings().first()
    return dict(found) if found else None


def claim_validation(database: Database, validation_id: str) -> bool:
    """Start the validation (``scheduled`` → ``validating``); False when it is running or
    done already (a job delivered twice runs once)."""
    with database.engine.begin() as conn:
        done = conn.execute(update(area_validations)
                            .where(area_validations.c.id == validation_id)
                            .where(area_validations.c.state == "scheduled")
                            .values(state="validating", updated_at=utcnow()))
        return done.rowcount == 1


def touch_validation(database: Database, validation_id: str) -> None:
    """The heartbeat of a running validation (its worker is alive)."""
    with database.engine.begin() as conn:
        conn.execute(update(area_validations).where(area_validations.c.id == validation_id)
                     .where(area_validations.c.state == "validating")
                     .values(updated_at=utcnow()))


def requeue_stalled(database: Database, older_than: Any) -> list[str]:
    """Validations whose worker went silent (``validating`` without a heartbeat since
    ``older_than``: it died) or whose job was never started (``scheduled`` since then: its
    worker died with it queued) go back to ``scheduled`` with a new job (compare and set
    on ``updated_at``, so two sweepers requeue each once). Returns their ids."""
    with database.engine.connect() as conn:
        stalled = [dict(r) for r in conn.execute(
            select(area_validations.c.id, area_validations.c.area_id,
                   area_validations.c.updated_at)
            .where(area_validations.c.state.in_(("scheduled", "validating")))
            .where(area_validations.c.updated_at < older_than).limit(100)).mappings()]
    requeued = []
    for row in stalled:
        with database.engine.begin() as conn:
            done = conn.execute(update(area_validations)
                                .where(area_validations.c.id == row["id"])
                                .where(area_validations.c.updated_at == row["updated_at"])
                                .where(area_validations.c.state.in_(("scheduled", "validating")))
                                .values(state="scheduled", updated_at=utcnow()))
            if done.rowcount == 1:
                database.enqueue(conn, [jobs.validate_job(row["area_id"], row["id"])])
                requeued.append(row["id"])
    return requeued


def current_versions(database: Database, area_id: str,
                     files: Sequence[tuple[str, int]]) -> dict[str, str] | None:
    """The object keys of ``files`` (name, version), or None when any has changed."""
    with database.engine.connect() as conn:
        found = _files(conn, area_id, [name for name, _ in files])
    keys = {}
    for name, version in files:
        row = found.get(name)
        if row is None or row["version"] != version:
            return None
        keys[name] = row["object_key"]
    return keys


def finish_validation(database: Database, validation_id: str, state: str,
                      result: dict[str, Any]) -> bool:
    """Record a validation's outcome (``valid``, ``invalid`` or ``stale``) and set it on
    the files still at the versions validated and still waiting for this validation.
    False when it was recorded already (a redelivered job)."""
    now = utcnow()
    with database.engine.begin() as conn:
        row = conn.execute(select(area_validations).where(area_validations.c.id == validation_id)
                           .with_for_update()).mappings().first()
        if row is None or row["state"] in FINAL:
            return False
        conn.execute(update(area_validations).where(area_validations.c.id == validation_id)
                     .values(state=state, updated_at=now, **result))
        if state != "stale":
            for name, version in json.loads(row["files"]):
                conn.execute(update(area_files).where(area_files.c.area_id == row["area_id"])
                             .where(area_files.c.name == name)
                             .where(area_files.c.version == version)
                             .where(area_files.c.validation_id == validation_id)
                             .values(validation_state=state, updated_at=now))
        done = dict(row, state=state, updated_at=now, **result)
        event = {"valid": "validated", "invalid": "validation_failed"}.get(state, "stale")
        database.enqueue(conn, [_event(conn, row["area_id"], event,
                                       validation=validation_view(done))])
    metrics.AREA_VALIDATIONS.labels(state).inc()
    return True


def request_id_for(area_id: str, name: str, version: int) -> str:
    """The request id of a submitted file: the same for the same version (a repeated
    submission records nothing twice)."""
    raw = f"area\0{area_id}\0{name}\0{version}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _verdict(row: dict[str, Any], reject_invalid: bool) -> tuple[str, str | None] | None:
    """A file's verdict at submission: success (valid), failure with its reason (with
    ``reject_invalid``: checksums that differ from those declared, or an invalid
    validation), or None (not decided yet: the submission waits)."""
    if row["checksum_state"] == "checksummed" and row["validation_state"] == "valid":
        return "success", None
    if not reject_invalid:
        return None
    if row["checksum_state"] == "checksum_mismatch":
        return "failure", "checksum_mismatch: the checksums differ from those declared"
    if row["validation_state"] == "invalid":
        return "failure", "invalid"
    return None


def submit(database: Database, area_id: str, reject_invalid: bool = False
           ) -> tuple[bool, list[dict[str, Any]]]:
    """Mark the area ``submitted`` with its files (name, version, request id, object key,
    size, checksums, verdict and reason); when it is submitted already, the same list
    again (the caller repeats the idempotent promotion). ``AreaError`` 409
    ``not_validated`` naming the files that are not valid (with ``reject_invalid``: that
    are not decided, valid or invalid, yet)."""
    with database.engine.begin() as conn:
        area = _locked_area(conn, area_id)
        if area["state"] == "submitted":
            return False, list(json.loads(area["submitted"]))
        if area["state"] in GONE:
            raise AreaError("area_deleting", "the area is being deleted")
        rows = [dict(r) for r in conn.execute(
            select(area_files).where(area_files.c.area_id == area_id)
            .order_by(area_files.c.name)).mappings()]
        if not rows:
            raise AreaError("not_validated", "the area has no files")
        verdicts = {r["name"]: _verdict(r, reject_invalid) for r in rows}
        unready = [name for name, verdict in verdicts.items() if verdict is None]
        if unready:
            raise AreaError("not_validated", f"not validated: {', '.join(unready)}")
        reasons = _validation_reasons(conn, rows)
        submitted = []
        for r in rows:
            verdict, reason = verdicts[r["name"]] or ("failure", None)
            if reason == "invalid":
                reason = f"invalid: {reasons.get(r['validation_id']) or 'validation failed'}"
            submitted.append({
                "name": r["name"], "version": r["version"],
                "request_id": request_id_for(area_id, r["name"], r["version"]),
                "object_key": r["object_key"], "size": r["size"],
                "checksums": json.loads(r["checksums"]), "verdict": verdict,
                "reason": reason})
        conn.execute(update(areas).where(areas.c.id == area_id).values(
            state="submitted", submitted=json.dumps(submitted), updated_at=utcnow()))
        database.enqueue(conn, [_event(
            conn, area_id, "submitted", request_ids=[f["request_id"] for f in submitted],
            rejected=[f["name"] for f in submitted if f["verdict"] == "failure"])])
    return True, submitted


def _validation_reasons(conn: Any, rows: Sequence[dict[str, Any]]) -> dict[str, str | None]:
    ids = [r["validation_id"] for r in rows if r["validation_id"]]
    if not ids:
        return {}
    found = conn.execute(select(area_validations.c.id, area_validations.c.reason)
                         .where(area_validations.c.id.in_(ids)))
    return {row.id: row.reason for row in found}
