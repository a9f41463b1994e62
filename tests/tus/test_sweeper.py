"""The expiry sweeper and the lease, driven in-process against the same WORKDIR as a
running gateway (shared SQLite file and storage directories), answers checked over HTTP."""
from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import update

from core.ingest import Payload
from core.resumable import LeaseLost
from core.resumable_tasks import LEFTOVER_SECONDS, ResumableSweeper
from core.services import Services
from core.settings import Settings
from db.tus import tus_uploads
from tests.e2e import Gateway
from tests.tus.client import CONTENT_TYPE, Tus
from tests.tus.stored import status, wait_available

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)


@pytest.fixture
def services(gateway: Gateway) -> Iterator[Services]:
    built = Services.build(Settings.from_env(gateway.env))
    yield built
    built.close()


def incomplete(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "upload-quarantine" / ".resumable").iterdir())


def test_expired_uploads_are_swept_and_answer_410(gateway: Gateway, tus: Tus,
                                                  services: Services) -> None:
    workdir = Path(gateway.env["WORKDIR"])
    path = tus.new(1000)
    assert tus.patch(path, 0, b"x" * 10).status == 204
    partial = tus.path(tus.request("POST", tus.prefix, {
        "Upload-Length": "3", "Upload-Concat": "partial"}).header("Location"))
    assert tus.patch(partial, 0, b"abc").status == 204
    key = path.rsplit("/", 1)[-1]
    assert services.database.get_tus(key)["object_key"].split("/")[-1] in incomplete(workdir)
    sweeper = ResumableSweeper(services.resumable)
    assert sweeper.sweep(now=dt.datetime.now(dt.UTC)) == 0  # nothing due yet
    assert sweeper.sweep(now=LATER) >= 2
    for gone in (path, partial):
        assert tus.head(gone).status == 410
        assert tus.patch(gone, 0, b"x").status == 410
    row = services.database.get_tus(key)
    assert row["state"] == "expired"
    assert row["object_key"].split("/")[-1] not in incomplete(workdir)
    found = status(gateway, tus.head(path).header("x-rh-insights-request-id") or row["request_id"])
    assert found["status"] == "expired"


def test_a_dead_holder_loses_the_lease(services: Services) -> None:
    resumable = services.resumable
    payload = Payload(request_id=secrets.token_hex(8), service="testareno", category="tus",
                      content_type=CONTENT_TYPE)
    dead, alive = secrets.token_hex(8), secrets.token_hex(8)
    row = resumable.create("single", 20, payload, None, None, None, None, dead)
    assert resumable.acquire(row["id"], alive) is None  # held
    session = resumable.open(row, dead)
    session.write(b"a" * 5)
    with services.database.engine.begin() as conn:  # the holder stalls past its lease
        conn.execute(update(tus_uploads).where(tus_uploads.c.id == row["id"])
                     .values(lease_until=dt.datetime.now(dt.UTC)
                             - dt.timedelta(seconds=1)))
    taken = resumable.acquire(row["id"], alive)
    assert taken is not None and taken["upload_offset"] == 0
    with pytest.raises(LeaseLost):
        session.checkpoint(release=True)  # it can record nothing any more
    session.close()
    assert not services.database.renew_tus(row["id"], dead, 30)
    other = resumable.open(taken, alive)
    other.write(b"b" * 20)
    assert other.checkpoint(release=False)
    other.close()
    assert resumable.finish(other.row, alive)
    assert services.database.get_upload(payload.request_id)["size"] == 20


def test_complete_but_unrecorded_uploads_are_finished(gateway: Gateway, services: Services) -> None:
    """A gateway stored every byte, then died before recording the payload: the sweeper
    (on any gateway) records it, and it goes on to available."""
    resumable = services.resumable
    payload = Payload(request_id=secrets.token_hex(8), service="testareno", category="tus",
                      content_type=CONTENT_TYPE)
    token = secrets.token_hex(8)
    row = resumable.create("single", 1_500_000, payload, None, None, None, None, token)
    session = resumable.open(row, token)
    data = os.urandom(1_500_000)
    session.write(data)
    assert session.checkpoint(release=False)
    session.close()
    assert services.database.get_tus(row["id"])["state"] == "complete"
    assert ResumableSweeper(resumable).sweep() == 0  # its holder may still be at it
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    with services.database.engine.begin() as conn:  # ... until its lease ran out long ago
        conn.execute(update(tus_uploads).where(tus_uploads.c.id == row["id"])
                     .values(lease_until=past, updated_at=past))
    assert ResumableSweeper(resumable).sweep() >= 1
    wait_available(gateway, payload.request_id, ident=None)  # made without an identity


def test_leftovers_no_upload_owns_are_discarded(gateway: Gateway, services: Services) -> None:
    storage = services.storage
    writer = storage.open_resumable(  # type: ignore[attr-defined]
        "quarantine", "resumable/" + "f" * 32, 0, {}, 100)
    writer.write(b"orphan")
    writer.checkpoint()
    writer.close()
    workdir = Path(gateway.env["WORKDIR"])
    assert "f" * 32 in incomplete(workdir)
    sweeper = ResumableSweeper(services.resumable)
    assert sweeper.discard_leftovers(older_than=0) == 0  # too young
    import time
    assert sweeper.discard_leftovers(older_than=time.time() + LEFTOVER_SECONDS) >= 1
    assert "f" * 32 not in incomplete(workdir)


def test_a_patch_finishes_an_upload_stored_but_not_recorded(gateway: Gateway, tus: Tus,
                                                            services: Services) -> None:
    """A gateway stored every byte and completed the object, then died before recording
    the payload. The client's retry (an empty PATCH at the end, or a HEAD) records it:
    no incomplete object is created again in its place."""
    resumable = services.resumable
    rid = secrets.token_hex(8)
    payload = Payload(request_id=rid, service="testareno", category="tus",
                      content_type=CONTENT_TYPE)
    token = secrets.token_hex(8)
    data = os.urandom(2_000_003)
    row = resumable.create("single", len(data), payload, None, None, None, None, token)
    session = resumable.open(row, token)
    session.write(data)
    assert session.checkpoint(release=False)
    session.close()
    services.storage.complete_resumable(  # type: ignore[attr-defined]
        "quarantine", row["object_key"], {}, len(data))
    services.database.release_tus(row["id"], token)
    nobody = Tus(tus.base, None)
    answer = nobody.patch(f"/api/v1/tus/{row['id']}", len(data), b"")
    assert answer.status == 204, answer.body
    assert answer.header("Upload-Offset") == str(len(data))
    wait_available(gateway, rid, ident=None)
