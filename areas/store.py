"""The upload areas' queries (tables in ``areas.schema``). Every function blocks (callers
on an event loop use the executor) and runs in a transaction of its own; each change of
an area or of one of its files puts its notification (``platform.upload.area-events``)
and any work it starts (a checksum, a validation, a deletion: ``areas.jobs``) in the
outbox in that same transaction, so neither is lost nor sent for a change that did not
commit.

Files are versioned: each new upload of a name is a new object and the next version, and
a result (checksums, a validation) is recorded only for the version it was computed for
(compare and set), so work on a version that was replaced or deleted meanwhile changes
nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from areas import jobs
from areas.schema import area_files, area_uploads, area_validations, areas
from db import Database, OutboxItem, as_utc, utcnow

ACCEPTING = ("open",)
GONE = ("deleting", "deleted")
COUNTED = ("checksumming", "checksummed", "checksum_mismatch", "unvalidated", "validating",
           "valid", "invalid")


class AreaError(Exception):
    """A request the area's state refuses: ``code`` is a stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FileVersion:
    area_id: str
    name: str
    version: int
    object_key: str
    size: int
    part_size: int


# areas -----------------------------------------------------------------------------------

def create_area(database: Database, area_id: str, max_file_size: int) -> bool:
    """Create the area; False when it exists already (idempotent create)."""
    now = utcnow()
    try:
        with database.engine.begin() as conn:
            conn.execute(insert(areas).values(id=area_id, state="open",
                                              max_file_size=max_file_size,
                                              created_at=now, updated_at=now))
            database.enqueue(conn, [_event(conn, area_id, "created")])
    except IntegrityError:
        return False
    return True


def get_area(database: Database, area_id: str) -> dict[str, Any] | None:
    with database.engine.connect() as conn:
        found = conn.execute(select(areas).where(areas.c.id == area_id)).mappings().first()
    return dict(found) if found else None


def _locked_area(conn: Connection, area_id: str) -> dict[str, Any]:
    """The area's row, locked for this transaction (PostgreSQL: FOR UPDATE), so that a
    lock, a delete or a submit and a file's arrival are decided one after the other."""
    found = conn.execute(select(areas).where(areas.c.id == area_id).with_for_update()
                         ).mappings().first()
    if found is None:
        raise AreaError("not_found", f"no area {area_id}")
    return dict(found)


def _accepting(area: dict[str, Any]) -> None:
    state = area["state"]
    if state == "locked":
        raise AreaError("area_locked", "the area is locked: it accepts no files")
    if state in GONE:
        raise AreaError("area_deleting", "the area is being deleted")
    if state == "submitted":
        raise AreaError("area_submitted", "the area was submitted")


def set_lock(database: Database, area_id: str, locked: bool) -> str:
    """Lock or unlock the area; returns its state. Idempotent."""
    with database.engine.begin() as conn:
        area = _locked_area(conn, area_id)
        want, other = ("locked", "open") if locked else ("open", "locked")
        if area["state"] == want:
            return want
        if area["state"] != other:
            _accepting(area)
        conn.execute(update(areas).where(areas.c.id == area_id)
                     .values(state=want, updated_at=utcnow()))
        database.enqueue(conn, [_event(conn, area_id, want)])
    return want


def start_delete(database: Database, area_id: str) -> None:
    """Mark the area ``deleting`` and queue its deletion (idempotent)."""
    with database.engine.begin() as conn:
        area = _locked_area(conn, area_id)
        if area["state"] == "deleted":
            return
        conn.execute(update(areas).where(areas.c.id == area_id)
                     .values(state="deleting", updated_at=utcnow()))
        database.enqueue(conn, [_event(conn, area_id, "deleting"),
                                jobs.delete_job(area_id)])


def deletion_leftovers(database: Database, area_id: str
                       ) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """The object keys of the area's files and the ``(key, storage state)`` of its open
    direct uploads: what its deletion removes from storage."""
    with database.engine.connect() as conn:
        keys = list(conn.execute(select(area_files.c.object_key)
                                 .where(area_files.c.area_id == area_id)).scalars())
        uploads = [(r.object_key, json.loads(r.storage_state)) for r in conn.execute(
            select(area_uploads).where(area_uploads.c.area_id == area_id))]
    return keys, uploads


def finish_delete(database: Database, area_id: str) -> bool:
    """Forget the area's files and uploads and mark it ``deleted``; False when it is not
    being deleted (a redelivered job, after it was done)."""
    with database.engine.begin() as conn:
        area = _locked_area(conn, area_id)
        if area["state"] != "deleting":
            return False
        for table in (area_files, area_uploads):
            conn.execute(delete(table).where(table.c.area_id == area_id))
        conn.execute(update(areas).where(areas.c.id == area_id)
                     .values(state="deleted", updated_at=utcnow()))
        database.enqueue(conn, [_event(conn, area_id, "deleted")])
    return True


# files -----------------------------------------------------------------------------------

def check_accepting(database: Database, area_id: str) -> dict[str, Any]:
    """The area, if it accepts files now (``AreaError`` otherwise)."""
    area = get_area(database, area_id)
    if area is None:
        raise AreaError("not_found", f"no area {area_id}")
    _accepting(area)
    return area


def record_file(database: Database, area_id: str, name: str, object_key: str, size: int,
                part_size: int, declared: dict[str, str], upload_id: str | None = None
                ) -> tuple[FileVersion, str | None]:
    """Make the stored object ``object_key`` the area's file ``name`` (its next version)
    and queue its checksums; a direct upload's row (``upload_id``) goes in the same
    transaction. Returns the version and the key of the object it replaced (the caller
    removes it). ``AreaError`` when the area accepts no files now."""
    now = utcnow()
    with database.engine.begin() as conn:
        _accepting(_locked_area(conn, area_id))
        if upload_id is not None:
            gone = conn.execute(delete(area_uploads).where(area_uploads.c.id == upload_id))
            if gone.rowcount != 1:  # a concurrent completion of the same upload recorded it
                raise AreaError("no_such_upload", "the upload was completed meanwhile")
        old = conn.execute(select(area_files).where(area_files.c.area_id == area_id)
                           .where(area_files.c.name == name)).mappings().first()
        values = {"object_key": object_key, "size": size, "part_size": part_size,
                  "declared": json.dumps(declared), "checksums": None,
                  "checksum_state": "checksumming", "validation_state": "unvalidated",
                  "validation_id": None, "updated_at": now}
        if old is None:
            version = 1
            conn.execute(insert(area_files).values(area_id=area_id, name=name, version=1,
                                                   created_at=now, **values))
        else:
            version = old["version"] + 1
            conn.execute(update(area_files).where(area_files.c.id == old["id"])
                         .values(version=version, **values))
        file = FileVersion(area_id, name, version, object_key, size, part_size)
        database.enqueue(conn, [_event(conn, area_id, "file_stored", name, version),
                                jobs.checksum_job(file)])
    return file, (old["object_key"] if old is not None else None)


def current_file(database: Database, area_id: str, name: str) -> dict[str, Any] | None:
    with database.engine.connect() as conn:
        found = conn.execute(select(area_files).where(area_files.c.area_id == area_id)
                             .where(area_files.c.name == name)).mappings().first()
    return dict(found) if found else None


def record_checksums(database: Database, area_id: str, name: str, version: int,
                     checksums: dict[str, str], state: str) -> bool:
    """Record the checksums of version ``version`` of the file; False when that version
    is no longer the file's (replaced, deleted) or was checksummed already."""
    with database.engine.begin() as conn:
        area = conn.execute(select(areas.c.state).where(areas.c.id == area_id)).scalar()
        if area is None or area in GONE:
            return False
        done = conn.execute(
            update(area_files).where(area_files.c.area_id == area_id)
            .where(area_files.c.name == name).where(area_files.c.version == version)
            .where(area_files.c.checksum_state == "checksumming")
            .values(checksums=json.dumps(checksums), checksum_state=state,
                    updated_at=utcnow()))
        if done.rowcount != 1:
            return False
        database.enqueue(conn, [_event(conn, area_id, state, name, version)])
    return True


# direct uploads --------------------------------------------------------------------------

def add_upload(database: Database, area_id: str, name: str, object_key: str, size: int,
               part_size: int, declared: dict[str, str], state: dict[str, Any]) -> str:
    """Record a direct upload in progress; its id is its object key's last segment, so
    that a file tells which upload made it (``upload_id_of``)."""
    upload_id = upload_id_of(object_key)
    with database.engine.begin() as conn:
        _accepting(_locked_area(conn, area_id))
        conn.execute(insert(area_uploads).values(
            id=upload_id, area_id=area_id, name=name, object_key=object_key, size=size,
            part_size=part_size, declared=json.dumps(declared),
            storage_state=json.dumps(state), created_at=utcnow()))
    return upload_id


def upload_id_of(object_key: str) -> str:
    return object_key.rsplit("/", 1)[-1]


def get_upload(database: Database, area_id: str, upload_id: str) -> dict[str, Any] | None:
    with database.engine.connect() as conn:
        found = conn.execute(select(area_uploads).where(area_uploads.c.id == upload_id)
                             .where(area_uploads.c.area_id == area_id)).mappings().first()
    return dict(found) if found else None


def stale_uploads(database: Database, older_than: Any) -> list[dict[str, Any]]:
    """Direct uploads started before ``older_than`` (their part URLs expired long ago)."""
    with database.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(area_uploads).where(area_uploads.c.created_at < older_than)
            .limit(500)).mappings()]


def open_upload_keys(database: Database, keys: Sequence[str]) -> set[str]:
    """The object keys among ``keys`` of a direct upload recorded in progress."""
    with database.engine.connect() as conn:
        return set(conn.execute(select(area_uploads.c.object_key)
                                .where(area_uploads.c.object_key.in_(list(keys)))).scalars())


def remove_upload(database: Database, upload_id: str) -> None:
    with database.engine.begin() as conn:
        conn.execute(delete(area_uploads).where(area_uploads.c.id == upload_id))


# describing ------------------------------------------------------------------------------

def _counts(conn: Connection, area_id: str) -> dict[str, int]:
    counts = dict.fromkeys(COUNTED, 0)
    for column in (area_files.c.checksum_state, area_files.c.validation_state):
        query = (select(column, func.count()).where(area_files.c.area_id == area_id)
                 .group_by(column))
        for state, count in conn.execute(query):
            counts[state] = counts.get(state, 0) + int(count)
    counts["files"] = int(conn.execute(select(func.count()).select_from(area_files)
                                       .where(area_files.c.area_id == area_id)).scalar_one())
    return counts


def _event(conn: Connection, area_id: str, event: str, name: str | None = None,
           version: int | None = None, **extra: Any) -> OutboxItem:
    body: dict[str, Any] = {"area_id": area_id, "event": event, "at": utcnow().isoformat(),
                            "counts": _counts(conn, area_id), **extra}
    if name is not None:
        body.update(file=name, version=version)
    return OutboxItem(jobs.AREA_EVENTS, area_id, body)


def file_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"], "version": row["version"], "size": row["size"],
        "part_size": row["part_size"], "declared": json.loads(row["declared"]),
        "checksums": json.loads(row["checksums"]) if row["checksums"] else None,
        "checksum_state": row["checksum_state"],
        "validation_state": row["validation_state"],
        "validation_id": row["validation_id"],
        "updated_at": as_utc(row["updated_at"]).isoformat(),
    }


def describe(database: Database, area_id: str) -> dict[str, Any] | None:
    """The area, its files, their counts by state, and its validations."""
    with database.engine.connect() as conn:
        area = conn.execute(select(areas).where(areas.c.id == area_id)).mappings().first()
        if area is None:
            return None
        files = [file_view(dict(r)) for r in conn.execute(
            select(area_files).where(area_files.c.area_id == area_id)
            .order_by(area_files.c.name)).mappings()]
        validations = [validation_view(dict(r)) for r in conn.execute(
            select(area_validations).where(area_validations.c.area_id == area_id)
            .order_by(area_validations.c.created_at)).mappings()]
        counts = _counts(conn, area_id)
    return {"area_id": area_id, "state": area["state"],
            "max_file_size": area["max_file_size"],
            "created_at": as_utc(area["created_at"]).isoformat(),
            "counts": counts, "files": files, "validations": validations,
            "submitted": json.loads(area["submitted"]) if area["submitted"] else None}


def status(database: Database, area_id: str) -> dict[str, Any] | None:
    """The area's state and its files' counts by state (what a submitter or the
    ingestion service polls)."""
    with database.engine.connect() as conn:
        state = conn.execute(select(areas.c.state).where(areas.c.id == area_id)).scalar()
        if state is None:
            return None
        return {"area_id": area_id, "state": state, "counts": _counts(conn, area_id)}


def validation_view(row: dict[str, Any]) -> dict[str, Any]:
    duration = row["duration_seconds"]
    return {
        "validation_id": row["id"], "validator": row["validator"],
        "files": [name for name, _ in json.loads(row["files"])], "state": row["state"],
        "exit_code": row["exit_code"], "stdout_tail": row["stdout_tail"],
        "stderr_tail": row["stderr_tail"],
        "duration_seconds": duration / 1000 if duration is not None else None,
        "reason": row["reason"],
        "created_at": as_utc(row["created_at"]).isoformat(),
        "updated_at": as_utc(row["updated_at"]).isoformat(),
    }


def keys_of(database: Database, area_id: str, names: Sequence[str]) -> dict[str, str]:
    with database.engine.connect() as conn:
        return {r.name: r.object_key for r in conn.execute(
            select(area_files.c.name, area_files.c.object_key)
            .where(area_files.c.area_id == area_id).where(area_files.c.name.in_(names)))}
