"""Treatment plans: association, their documents, and the bundle claims.

A bundle (a ``treatment_plan_assets`` row of kind ``PROVPREV``) is identified by its plan
and its ``content_key`` (the sha256 of the plan's sorted ``id:sha1`` list): the same
content is never bundled twice (unique constraint), and a plan whose content changed after
bundling gets the next ``version`` (unique with the plan), never an overwritten one.

Claiming a bundle happens in one transaction that first locks the plan row with a
conditional ``UPDATE … WHERE revision = :seen``: a change of the plan recorded meanwhile
makes the claim ``stale`` (the plan stays pending and is checked again), and two claimers
of one plan are serialized. The claim is a lease (``claimed_by``/``claimed_until``),
renewed while building; one left by a crashed bundler is taken over once it expires.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Connection, func, insert, select, update

from consumer.naming import BUNDLED_TYPE, base_name
from consumer.records import (
    VALID_UPLOAD,
    insert_ignore,
    list_transfers,
    mark_pending,
    t,
    treatment_plan_assets,
    treatment_plans,
    u,
)
from db import as_utc, utcnow

KIND = "PROVPREV"
a, p = treatment_plan_assets, treatment_plans


class AssociationError(Exception):
    """The association cannot be made; ``code`` is an API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


def associate(conn: Connection, plan_uuid: str, ids: Sequence[int], user: str,
              org_id: str | None = None) -> None:
    """Associate transfers ``ids`` with the plan as ``user`` (idempotent for the same plan).
    With ``org_id`` (a staff user of an org) every transfer must be that org's upload, and
    the plan must hold no other org's (else ``not_found``, as for an id that does not
    exist). Raises ``AssociationError``; the caller's transaction then rolls back."""
    now = utcnow()
    if org_id is not None and not plan_visible(conn, plan_uuid, org_id):
        raise AssociationError("not_found", f"no treatment plan {plan_uuid} of org {org_id}")
    insert_ignore(conn, p, {"uuid": plan_uuid, "revision": 0, "pending": False, "attempts": 0,
                            "created_at": now, "updated_at": now}, ["uuid"])
    conn.execute(
        update(t)
        .where(t.c.id.in_(ids), t.c.treatment_plan_uuid.is_(None), t.c.unmatched_reason.is_(None),
               t.c.type == BUNDLED_TYPE)
        .values(treatment_plan_uuid=plan_uuid, associated_by=user, associated_at=now, updated_at=now)
    )
    # Rows are locked transfers first, then the plan, as file events do (no deadlock). The
    # plan's lock queues associations of one plan, so the file name check below sees the
    # transfers of any association committed before this one.
    mark_pending(conn, plan_uuid)
    query = select(t.c.id, t.c.file_name, t.c.type, t.c.unmatched_reason, t.c.treatment_plan_uuid,
                   u.c.status, u.c.org_id).select_from(t.outerjoin(u, u.c.request_id == t.c.request_id))
    rows = conn.execute(query.where(t.c.id.in_(ids))).all()
    missing = set(ids) - {row.id for row in rows if org_id is None or row.org_id == org_id}
    if missing:
        raise AssociationError("not_found", f"no asset transfer {_ids(missing)}")
    _check_rows(rows, plan_uuid)
    names = Counter(base_name(name) for name in conn.execute(
        select(t.c.file_name).where(t.c.treatment_plan_uuid == plan_uuid)).scalars())
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:
        raise AssociationError("not_associable",
                               f"the plan would hold two files named {', '.join(twice)}")


def _check_rows(rows: Sequence[Any], plan_uuid: str) -> None:
    for row in rows:
        if row.treatment_plan_uuid not in (None, plan_uuid):
            raise AssociationError("already_associated", f"asset transfer {row.id} is already "
                                   f"associated with treatment plan {row.treatment_plan_uuid}")
        if row.unmatched_reason:
            raise AssociationError("not_associable", f"asset transfer {row.id} is unmatched: "
                                   f"{row.unmatched_reason}")
        if row.type != BUNDLED_TYPE:
            raise AssociationError("not_associable", f"asset transfer {row.id} ({row.file_name})"
                                   " is not an OBJ file; only OBJ files are bundled")
        if row.status == "rejected":
            raise AssociationError("not_associable",
                                   f"asset transfer {row.id} ({row.file_name}) failed validation")


def plan_visible(conn: Connection, plan_uuid: str, org_id: str) -> bool:
    """A plan belongs to the org of its transfers' uploads: visible to a staff user of
    ``org_id`` when it holds no transfer of anyone else (or none yet)."""
    others = conn.execute(
        select(t.c.id).select_from(t.outerjoin(u, u.c.request_id == t.c.request_id))
        .where(t.c.treatment_plan_uuid == plan_uuid,
               (u.c.org_id.is_(None)) | (u.c.org_id != org_id)).limit(1)).first()
    return others is None


def plan_document(conn: Connection, plan_uuid: str,
                  signed_url: Callable[[str, str], str],
                  org_id: str | None = None) -> dict[str, Any] | None:
    plan = conn.execute(select(p).where(p.c.uuid == plan_uuid)).first()
    if plan is None or (org_id is not None and not plan_visible(conn, plan_uuid, org_id)):
        return None
    transfers = list_transfers(conn, None, (), plan_uuid=plan_uuid, limit=100_000)
    assets = [_asset_document(row, signed_url)
              for row in conn.execute(select(a).where(a.c.plan_uuid == plan_uuid)
                                      .order_by(a.c.version.desc()))]
    return {"treatment_plan_uuid": plan_uuid, "status": _plan_status(transfers, assets),
            "transfers": transfers, "assets": assets}


def _asset_document(row: Any, signed_url: Callable[[str, str], str]) -> dict[str, Any]:
    done = row.status == "done"
    return {
        "id": row.id, "kind": row.kind, "version": row.version, "status": row.status,
        "request_id": row.request_id, "sha256": row.sha256, "size": row.size,
        "file_count": row.file_count, "error": row.error,
        "filename": bundle_filename(row.plan_uuid, row.version),
        "url": signed_url(row.object_key, bundle_filename(row.plan_uuid, row.version))
        if done else None,
        "created_at": as_utc(row.created_at).isoformat(),
        "completed_at": as_utc(row.completed_at).isoformat() if row.completed_at else None,
    }


def _plan_status(transfers: list[dict[str, Any]], assets: list[dict[str, Any]]) -> str:
    if transfers and all(tr["status"] == "bundled" for tr in transfers):
        return "bundled"
    if any(asset["status"] == "building" for asset in assets):
        return "bundling"
    if any(tr["status"] in ("invalid", "unmatched") for tr in transfers):
        return "blocked"
    if assets and assets[0]["status"] == "failed":
        return "failed"
    return "waiting"


def bundle_filename(plan_uuid: str, version: int) -> str:
    return f"{plan_uuid}_{KIND}_v{version}.zip"


# the bundler's queries ------------------------------------------------------------------


@dataclass(frozen=True)
class PlanFile:
    """One associated transfer, with the state and location of its upload."""

    id: int
    sha1: str
    file_name: str
    type: str | None
    unmatched_reason: str | None
    is_uploaded: bool
    request_id: str | None
    upload_status: str | None
    upload_reason: str | None
    object_key: str | None
    compression: str | None
    size: int | None
    created_at: dt.datetime

    @property
    def valid(self) -> bool:
        return self.is_uploaded and self.upload_status in VALID_UPLOAD


@dataclass(frozen=True)
class Claim:
    id: int
    plan_uuid: str
    version: int
    request_id: str
    object_key: str
    owner: str


def due_plans(conn: Connection, limit: int) -> list[str]:
    now = utcnow()
    query = (select(p.c.uuid).where(p.c.pending.is_(True))
             .where(p.c.retry_at.is_(None) | (p.c.retry_at <= now))
             .order_by(p.c.updated_at).limit(limit))
    return list(conn.execute(query).scalars())


def plan_revision(conn: Connection, plan_uuid: str) -> int | None:
    return conn.execute(select(p.c.revision).where(p.c.uuid == plan_uuid)).scalar()


def plan_files(conn: Connection, plan_uuid: str) -> list[PlanFile]:
    query = (select(t.c.id, t.c.sha1, t.c.file_name, t.c.type, t.c.unmatched_reason,
                    t.c.is_uploaded, t.c.request_id, u.c.status.label("upload_status"),
                    u.c.reason.label("upload_reason"), u.c.object_key, u.c.compression,
                    u.c.size, t.c.created_at)
             .select_from(t.outerjoin(u, u.c.request_id == t.c.request_id))
             .where(t.c.treatment_plan_uuid == plan_uuid))
    files = [PlanFile(**row) for row in conn.execute(query).mappings()]
    return sorted(files, key=lambda f: (base_name(f.file_name), f.sha1))


def content_key(files: Sequence[PlanFile]) -> str:
    listed = "\n".join(sorted(f"{f.id}:{f.sha1}" for f in files))
    return hashlib.sha256(listed.encode()).hexdigest()


def mark_checked(conn: Connection, plan_uuid: str, revision: int) -> bool:
    """Clear ``pending`` unless the plan changed since ``revision`` was read."""
    return bool(conn.execute(
        update(p).where(p.c.uuid == plan_uuid, p.c.revision == revision)
        .values(pending=False, attempts=0, retry_at=None)).rowcount)


def retry_later(conn: Connection, plan_uuid: str, delay: Callable[[int], float]) -> None:
    attempts = conn.execute(select(p.c.attempts).where(p.c.uuid == plan_uuid)).scalar() or 0
    conn.execute(update(p).where(p.c.uuid == plan_uuid).values(
        attempts=attempts + 1, retry_at=utcnow() + dt.timedelta(seconds=delay(attempts))))


def claim_bundle(conn: Connection, plan_uuid: str, revision: int, key: str, owner: str,
                 lease: float) -> Claim | str:
    """A ``Claim`` to build the bundle of content ``key``, or why not: ``stale`` (the plan
    changed), ``busy`` (another bundler holds it), ``done`` or ``failed``."""
    locked = conn.execute(update(p).where(p.c.uuid == plan_uuid, p.c.revision == revision)
                          .values(revision=p.c.revision)).rowcount
    if not locked:
        return "stale"
    now = utcnow()
    until = now + dt.timedelta(seconds=lease)
    row = conn.execute(select(a).where(a.c.plan_uuid == plan_uuid, a.c.content_key == key)).first()
    if row is None:
        return _new_claim(conn, plan_uuid, key, owner, now, until)
    if row.status != "building":
        return str(row.status)
    free = a.c.claimed_until.is_(None) | (a.c.claimed_until < now) | (a.c.claimed_by == owner)
    taken = conn.execute(update(a).where(a.c.id == row.id, a.c.status == "building", free)
                         .values(claimed_by=owner, claimed_until=until)).rowcount
    if not taken:
        return "busy"
    return Claim(row.id, plan_uuid, row.version, row.request_id, row.object_key, owner)


def _new_claim(conn: Connection, plan_uuid: str, key: str, owner: str, now: dt.datetime,
               until: dt.datetime) -> Claim:
    last = conn.execute(select(func.max(a.c.version)).where(a.c.plan_uuid == plan_uuid)).scalar()
    version = (last or 0) + 1
    request_id = uuid.uuid4().hex
    object_key = f"treatment-plans/{plan_uuid}/{KIND}-v{version}.zip"
    inserted = conn.execute(insert(a).values(
        plan_uuid=plan_uuid, version=version, kind=KIND, content_key=key, status="building",
        request_id=request_id, object_key=object_key, claimed_by=owner, claimed_until=until,
        created_at=now))
    key_row = inserted.inserted_primary_key
    assert key_row is not None
    return Claim(int(key_row[0]), plan_uuid, version, request_id, object_key, owner)


def _owned(claim: Claim) -> Any:
    return (a.c.id == claim.id) & (a.c.claimed_by == claim.owner) & (a.c.status == "building")


def renew_claim(conn: Connection, claim: Claim, lease: float) -> bool:
    until = utcnow() + dt.timedelta(seconds=lease)
    return bool(conn.execute(update(a).where(_owned(claim)).values(claimed_until=until)).rowcount)


def release_claim(conn: Connection, claim: Claim) -> None:
    conn.execute(update(a).where(_owned(claim)).values(claimed_until=None, claimed_by=None))


def complete_claim(conn: Connection, claim: Claim, sha256: str, size: int,
                   files: Sequence[PlanFile]) -> bool:
    """Record the built bundle (False if the claim was lost meanwhile)."""
    done = conn.execute(update(a).where(_owned(claim)).values(
        status="done", sha256=sha256, size=size, file_count=len(files), completed_at=utcnow(),
        claimed_until=None)).rowcount
    if not done:
        return False
    conn.execute(update(t).where(t.c.id.in_([f.id for f in files]))
                 .values(bundle_version=claim.version))
    return True


def fail_claim(conn: Connection, claim: Claim, error: str) -> bool:
    return bool(conn.execute(update(a).where(_owned(claim)).values(
        status="failed", error=error[:2000], completed_at=utcnow(), claimed_until=None)).rowcount)
