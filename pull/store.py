"""The puller's queries: jobs, the remote files seen, and provider leases (tables in
``pull.schema``). Every function blocks (callers on an event loop use the executor) and
runs in a transaction of its own."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Update, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from db import as_utc, utcnow
from pull.schema import ACTIVE, FINAL_FILE_STATES, pull_files, pull_jobs, pull_leases

MAX_FILES_SHOWN = 1000


class JobRunning(Exception):
    """A job for this provider is queued or running already."""

    def __init__(self, job_id: str | None) -> None:
        super().__init__(f"job {job_id} is still running")
        self.job_id = job_id


@dataclass(frozen=True)
class Remote:
    """A remote file as listed: its path (from the provider's directory), size, mtime."""

    path: str
    size: int
    mtime: int

    def key(self, provider: str) -> str:
        raw = f"{provider}\0{self.path}\0{self.size}\0{self.mtime}"
        return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    size: int
    mtime: int
    bytes_done: int
    resume_state: str | None = None  # JSON: a download into a quarantine object (0013)


# jobs ------------------------------------------------------------------------------------

def create_job(engine: Engine, provider: str, trigger: str) -> str:
    """A new queued job; ``JobRunning`` when the provider has one queued or running."""
    job_id, now = uuid.uuid4().hex, utcnow()
    try:
        with engine.begin() as conn:
            conn.execute(insert(pull_jobs).values(
                id=job_id, provider=provider, state="queued", trigger=trigger, listed=False,
                files_skipped=0, files_unchanged=0, attempts=0, created_at=now,
                updated_at=now))
    except IntegrityError:
        raise JobRunning(active_job_id(engine, provider)) from None
    return job_id


def active_job_id(engine: Engine, provider: str) -> str | None:
    query = select(pull_jobs.c.id).where(pull_jobs.c.provider == provider).where(
        pull_jobs.c.state.in_(ACTIVE))
    with engine.connect() as conn:
        found: str | None = conn.execute(query).scalar()
    return found


def job_row(engine: Engine, job_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = conn.execute(select(pull_jobs).where(pull_jobs.c.id == job_id)).mappings().first()
    return dict(found) if found else None


def last_job_at(engine: Engine, provider: str) -> dt.datetime | None:
    query = select(func.max(pull_jobs.c.created_at)).where(pull_jobs.c.provider == provider)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return as_utc(found) if found else None


def last_success_at(engine: Engine, provider: str) -> dt.datetime | None:
    query = select(func.max(pull_jobs.c.finished_at)).where(
        pull_jobs.c.provider == provider).where(pull_jobs.c.state == "completed")
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return as_utc(found) if found else None


def update_job(engine: Engine, job_id: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(pull_jobs).where(pull_jobs.c.id == job_id).values(
            updated_at=utcnow(), **values))


def start_job(engine: Engine, job_id: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(pull_jobs).where(pull_jobs.c.id == job_id).values(
            state="running", updated_at=now,
            started_at=func.coalesce(pull_jobs.c.started_at, now)))


def finish_job(engine: Engine, job_id: str, state: str, reason: str | None) -> None:
    now = utcnow()
    update_job(engine, job_id, state=state, reason=reason, finished_at=now)


# files -----------------------------------------------------------------------------------

def record_listing(engine: Engine, job_id: str, provider: str, listed: Sequence[Remote],
                   skipped: int) -> None:
    """Record what a job's listing found: new file versions become pending files of the
    job, pending ones left by an earlier job move to it, versions already finished count
    as unchanged. A pending version whose path now shows another size or mtime is
    ``changed``: the new version replaces it."""
    now = utcnow()
    keys = {remote.key(provider): remote for remote in listed}
    with engine.begin() as conn:
        known: dict[str, str] = {}
        key_list = list(keys)
        for start in range(0, len(key_list), 500):
            chunk = key_list[start:start + 500]
            known.update(conn.execute(select(pull_files.c.key, pull_files.c.state).where(
                pull_files.c.key.in_(chunk))).tuples().all())
        new = [k for k in keys if k not in known]
        resumed = [k for k, state in known.items() if state == "pending"]
        unchanged = len(known) - len(resumed)
        paths = [keys[k].path for k in new]
        for start in range(0, len(paths), 500):
            conn.execute(update(pull_files).where(pull_files.c.provider == provider).where(
                pull_files.c.state == "pending").where(pull_files.c.path.in_(
                    paths[start:start + 500])).values(
                state="changed", message="the file changed on the server", resume_state=None,
                updated_at=now))
        if new:
            conn.execute(insert(pull_files), [
                {"key": k, "provider": provider, "path": keys[k].path, "size": keys[k].size,
                 "mtime": keys[k].mtime, "job_id": job_id, "state": "pending",
                 "bytes_done": 0, "created_at": now, "updated_at": now} for k in new])
        for start in range(0, len(resumed), 500):
            conn.execute(update(pull_files).where(pull_files.c.key.in_(
                resumed[start:start + 500])).values(job_id=job_id, updated_at=now))
        conn.execute(update(pull_jobs).where(pull_jobs.c.id == job_id).values(
            listed=True, files_skipped=skipped, files_unchanged=unchanged, updated_at=now))


def pending_files(engine: Engine, job_id: str) -> list[FileRow]:
    query = (select(pull_files.c.id, pull_files.c.path, pull_files.c.size, pull_files.c.mtime,
                    pull_files.c.bytes_done, pull_files.c.resume_state)
             .where(pull_files.c.job_id == job_id).where(pull_files.c.state == "pending")
             .order_by(pull_files.c.id))
    with engine.connect() as conn:
        return [FileRow(*row) for row in conn.execute(query).tuples()]


def checkpoint(engine: Engine, file_id: int, bytes_done: int,
               resume_state: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(pull_files).where(pull_files.c.id == file_id).values(
            bytes_done=bytes_done, resume_state=resume_state, updated_at=utcnow()))


def live_object_keys(engine: Engine, keys: Sequence[str]) -> set[str]:
    """The subset of ``keys`` (resumable quarantine objects) that a pending file's
    download still owns: the tus sweeper leaves those alone (``ResumableSweeper``)."""
    query = select(pull_files.c.resume_state).where(pull_files.c.state == "pending").where(
        pull_files.c.resume_state.is_not(None))
    with engine.connect() as conn:
        owned = {json.loads(state).get("key") for state in conn.execute(query).scalars()}
    return owned & set(keys)


def final_values(state: str, *, sha256: str | None = None, request_ids: Sequence[str] = (),
                 error: str | None = None, message: str | None = None,
                 disposal: str | None = None, bytes_done: int | None = None) -> dict[str, Any]:
    """The columns a file's final ``state`` sets (``finish_files``)."""
    assert state in FINAL_FILE_STATES
    values: dict[str, Any] = {
        "state": state, "sha256": sha256, "error": error, "message": message,
        "request_ids": json.dumps(list(request_ids)) if request_ids else None,
        "disposal": disposal, "resume_state": None, "updated_at": utcnow()}
    if bytes_done is not None:
        values["bytes_done"] = bytes_done
    return values


def finish_file(engine: Engine, file_id: int, state: str, **fields: Any) -> None:
    finish_files(engine, [(file_id, final_values(state, **fields))])


def finish_files(engine: Engine, finished: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Record files' final states (``final_values``) in one transaction, one executemany
    per set of columns: a statement built and run per file cost more than the commit."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for file_id, values in finished:
        by_columns.setdefault(tuple(sorted(values)), []).append(
            {"file_id": file_id, **{f"new_{name}": value for name, value in values.items()}})
    with engine.begin() as conn:
        for columns, params in by_columns.items():
            conn.execute(_finish_statement(columns), params)


@functools.lru_cache(maxsize=16)
def _finish_statement(columns: tuple[str, ...]) -> Update:
    return update(pull_files).where(pull_files.c.id == bindparam("file_id")).values(
        {name: bindparam(f"new_{name}") for name in columns})


def retry_failed(engine: Engine, provider: str) -> int:
    """Failed file versions of ``provider`` become pending again (the next job takes
    them, as the listing finds them still there)."""
    with engine.begin() as conn:
        result = conn.execute(update(pull_files).where(pull_files.c.provider == provider).where(
            pull_files.c.state == "failed").values(state="pending", error=None, message=None,
                                                   updated_at=utcnow()))
        return int(result.rowcount or 0)


# documents -------------------------------------------------------------------------------

_COUNTS = (
    func.count().label("total"),
    *(func.sum(case((pull_files.c.state == s, 1), else_=0)).label(s)
      for s in ("pending", *FINAL_FILE_STATES)),
    func.sum(pull_files.c.size).label("bytes_total"),
    func.sum(case((pull_files.c.state == "pending", pull_files.c.bytes_done),
                  else_=pull_files.c.size)).label("bytes_done"),
)


def job_documents(engine: Engine, provider: str | None = None, limit: int = 50,
                  job_id: str | None = None) -> list[dict[str, Any]]:
    """Jobs (newest first) with their counts; one job's also lists its files."""
    query = select(pull_jobs).order_by(pull_jobs.c.created_at.desc()).limit(limit)
    if provider is not None:
        query = query.where(pull_jobs.c.provider == provider)
    if job_id is not None:
        query = query.where(pull_jobs.c.id == job_id)
    with engine.connect() as conn:
        jobs = [dict(r) for r in conn.execute(query).mappings()]
        ids = [job["id"] for job in jobs]
        counts = {r["job_id"]: dict(r) for r in conn.execute(
            select(pull_files.c.job_id, *_COUNTS).where(pull_files.c.job_id.in_(ids))
            .group_by(pull_files.c.job_id)).mappings()} if ids else {}
        documents = [_document(job, counts.get(job["id"], {})) for job in jobs]
        if job_id is not None and documents:
            documents[0]["items"] = _items(conn, job_id)
    return documents


def _document(job: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    def number(name: str) -> int:
        return int(counts.get(name) or 0)

    total, bytes_total, bytes_done = number("total"), number("bytes_total"), number("bytes_done")
    finished = total - number("pending")
    if bytes_total:
        percent = 100.0 * bytes_done / bytes_total
    elif total:
        percent = 100.0 * finished / total
    else:
        percent = 100.0 if job["state"] == "completed" else 0.0

    def when(value: dt.datetime | None) -> str | None:
        return as_utc(value).isoformat() if value else None

    return {
        "id": job["id"], "provider": job["provider"], "state": job["state"],
        "trigger": job["trigger"], "reason": job["reason"],
        "files": {"total": total, "done": number("ingested") + number("duplicate"),
                  "ingested": number("ingested"), "duplicate": number("duplicate"),
                  "failed": number("failed"), "changed": number("changed"),
                  "pending": number("pending"), "skipped": job["files_skipped"],
                  "unchanged": job["files_unchanged"]},
        "bytes": {"total": bytes_total, "done": bytes_done},
        "percent": round(percent, 2),
        "created_at": when(job["created_at"]), "started_at": when(job["started_at"]),
        "finished_at": when(job["finished_at"]),
    }


def _items(conn: Any, job_id: str) -> list[dict[str, Any]]:
    query = (select(pull_files).where(pull_files.c.job_id == job_id)
             .order_by(case((pull_files.c.state == "failed", 0), else_=1), pull_files.c.id)
             .limit(MAX_FILES_SHOWN))
    return [{
        "path": r["path"], "size": r["size"], "mtime": r["mtime"], "state": r["state"],
        "bytes_done": r["size"] if r["state"] != "pending" else r["bytes_done"],
        "sha256": r["sha256"], "request_ids": json.loads(r["request_ids"] or "[]"),
        "error": r["error"], "message": r["message"], "disposal": r["disposal"],
    } for r in conn.execute(query).mappings()]


# leases ----------------------------------------------------------------------------------

def acquire_lease(engine: Engine, provider: str, holder: str, ttl: float) -> bool:
    """Take or renew the provider's lease; False while another holder's is valid."""
    now = utcnow()
    until = now + dt.timedelta(seconds=ttl)
    with engine.begin() as conn:
        taken = conn.execute(update(pull_leases).where(pull_leases.c.provider == provider).where(
            or_(pull_leases.c.holder == holder, pull_leases.c.expires_at < now)).values(
            holder=holder, expires_at=until)).rowcount
        if taken:
            return True
        if conn.execute(select(pull_leases.c.provider).where(
                pull_leases.c.provider == provider)).first():
            return False
    try:
        with engine.begin() as conn:
            conn.execute(insert(pull_leases).values(provider=provider, holder=holder,
                                                    expires_at=until))
        return True
    except IntegrityError:
        return False


def release_lease(engine: Engine, provider: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(pull_leases).where(and_(
            pull_leases.c.provider == provider, pull_leases.c.holder == holder)).values(
            expires_at=utcnow() - dt.timedelta(seconds=1)))
