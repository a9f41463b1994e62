"""Pull jobs against a real SFTP server on loopback: plain, gzip and GPG-encrypted + gzip
files, ``.sig`` and temporary names, names with spaces and non-ASCII, incremental runs,
new versions, completion actions, and what lands in the database."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from pull.ingest import pull_request_id
from tests.fixtures.gpg import PASSPHRASE, Keyring
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer


def put(server: SFTPTestServer, relative: str, data: bytes, mtime: int | None = None) -> Path:
    path = server.root / "outgoing" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def by_name(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["filename"]): r for r in rows}


def test_pulls_decrypts_gunzips_and_ingests(tmp_path: Path, sftp: SFTPTestServer,
                                            provider_keyring: Keyring) -> None:
    os.environ["TEST_GPG_PASSPHRASE"] = PASSPHRASE
    put(sftp, "plain report.csv", b"a,b\n1,2\n")
    put(sftp, "empty.csv", b"")
    put(sftp, "données.csv.gz", gzip.compress(b"x,y\n3,4\n"))
    encrypted = sftp.root / "outgoing" / "secret.csv.gz.gpg"
    provider_keyring.encrypt(gzip.compress(b"s,t\n5,6\n"), encrypted)
    put(sftp, "secret.csv.gz.gpg.sig", b"signature")
    put(sftp, "upload.csv.part", b"half")
    put(sftp, ".hidden.csv", b"hidden")
    put(sftp, "sub/deeper.csv", b"not recursive")
    providers = {"acme": entry(sftp, steps=["decrypt", "gunzip"], gpg_home=str(
        provider_keyring.home), gpg_passphrase_env="TEST_GPG_PASSPHRASE")}
    with PullHarness(tmp_path, providers, sftp) as harness:
        job = harness.run_job("acme")
        assert job["state"] == "completed", job
        assert job["files"] | {} == {"total": 4, "done": 4, "ingested": 4, "duplicate": 0,
                                     "failed": 0, "changed": 0, "pending": 0, "skipped": 3,
                                     "unchanged": 0}
        assert job["percent"] == 100.0 and job["started_at"] and job["finished_at"]
        rows = by_name(harness.uploads())
        assert sorted(rows) == ["données.csv", "empty.csv", "plain report.csv", "secret.csv"]
        assert harness.stored(rows["empty.csv"]) == b""
        assert harness.stored(rows["secret.csv"]) == b"s,t\n5,6\n"
        assert harness.stored(rows["données.csv"]) == b"x,y\n3,4\n"
        plain = rows["plain report.csv"]
        assert harness.stored(plain) == b"a,b\n1,2\n"
        assert plain["source"] == "pull" and plain["service"] == "testareno"
        assert plain["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
        assert plain["request_id"] == pull_request_id("acme", str(plain["sha256"]))
        metadata = json.loads(str(rows["secret.csv"]["metadata"]))
        assert metadata == {"provider": "acme", "remote_path": "/outgoing/secret.csv.gz.gpg",
                            "steps": ["decrypt", "gunzip"]}
        received = [e for e in harness.timeline(str(plain["request_id"]))
                    if e["status"] == "received"]
        assert received[0]["message"] == "pulled from provider acme: /outgoing/plain report.csv"
        items = {i["path"]: i for i in job["items"]}
        assert items["secret.csv.gz.gpg"]["request_ids"] == [rows["secret.csv"]["request_id"]]
        assert all(i["disposal"] == "left" for i in items.values())
        # everything stays on the server (completion: leave)
        assert (sftp.root / "outgoing" / "plain report.csv").exists()


def test_second_run_finds_nothing_new_and_a_changed_file_is_a_new_version(
        tmp_path: Path, sftp: SFTPTestServer) -> None:
    put(sftp, "a.csv", b"first", mtime=1_700_000_000)
    put(sftp, "b.csv", b"bee", mtime=1_700_000_000)
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp) as harness:
        first = harness.run_job("acme")
        assert first["files"]["ingested"] == 2
        opened = len(sftp.opened)
        second = harness.run_job("acme")
        assert second["state"] == "completed"
        assert second["files"]["total"] == 0 and second["files"]["unchanged"] == 2
        assert len(sftp.opened) == opened  # nothing was downloaded again
        put(sftp, "a.csv", b"second version", mtime=1_700_000_100)
        third = harness.run_job("acme")
        assert third["files"]["ingested"] == 1 and third["files"]["unchanged"] == 1
        contents = sorted(harness.stored(r) for r in harness.uploads())
        assert contents == [b"bee", b"first", b"second version"]
        # the same content again under a new mtime: recorded as a duplicate, not stored
        put(sftp, "b.csv", b"bee", mtime=1_700_000_200)
        fourth = harness.run_job("acme")
        assert fourth["files"]["duplicate"] == 1 and fourth["files"]["ingested"] == 0
        assert len(harness.uploads()) == 3
        jobs = harness.request("GET", "/api/v1/pulls/jobs?provider=acme")[1]["jobs"]
        assert [j["id"] for j in jobs] == [fourth["id"], third["id"], second["id"], first["id"]]


def test_completion_move_and_delete(tmp_path: Path, sftp: SFTPTestServer) -> None:
    put(sftp, "lab/one.csv", b"one")
    put(sftp, "two.csv", b"two")
    put(sftp, "done/two.csv", b"an older two, already moved")
    (sftp.root / "other").mkdir()
    (sftp.root / "other" / "three.csv").write_bytes(b"three")
    providers = {
        "mover": entry(sftp, recursive=True, completion="move", move_to="/outgoing/done"),
        "deleter": entry(sftp, directory="/other", completion="delete"),
    }
    with PullHarness(tmp_path, providers, sftp) as harness:
        moved = harness.run_job("mover")
        assert moved["files"]["ingested"] == 2, moved
        assert {i["path"]: i["disposal"] for i in moved["items"]} == {
            "lab/one.csv": "moved", "two.csv": "moved"}
        outgoing = sftp.root / "outgoing"
        assert sorted(p.relative_to(outgoing).as_posix() for p in outgoing.rglob("*")
                      if p.is_file()) == ["done/lab/one.csv", "done/two-2.csv", "done/two.csv"]
        deleted = harness.run_job("deleter")
        assert deleted["files"]["ingested"] == 1
        assert not (sftp.root / "other" / "three.csv").exists()
        assert sorted(harness.stored(r) for r in harness.uploads()) == [b"one", b"three", b"two"]
        # the moved files are not pulled again from done/
        assert harness.run_job("mover")["files"]["total"] == 0


def test_untar_and_private_key_auth(tmp_path: Path) -> None:
    import io
    import tarfile

    import asyncssh

    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(client_key.export_private_key())
    known_hosts = tmp_path / "known_hosts"
    server = SFTPTestServer(tmp_path / "root", client_key=client_key)
    (server.root / "outgoing").mkdir()
    with server:
        known_hosts.write_text(f"[127.0.0.1]:{server.port} {server.host_key_line}\n")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in (("m1.txt", b"member one"), ("m2.txt", b"member two")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        put(server, "bundle.tgz", buffer.getvalue())
        provider = entry(server, password_env=None, host_key=None, private_key=str(key_file),
                         known_hosts=str(known_hosts), steps=["untar"])
        with PullHarness(tmp_path, {"keyed": provider}, server) as harness:
            job = harness.run_job("keyed")
            assert job["state"] == "completed", job
            assert {r["filename"]: harness.stored(r) for r in harness.uploads()} == {
                "bundle/m1.txt": b"member one", "bundle/m2.txt": b"member two"}


def test_assets_payloads_get_asset_transfer_events(tmp_path: Path, sftp: SFTPTestServer) -> None:
    from tests.watcher.harness import read_topics

    obj = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    put(sftp, "K001_Step1.obj", obj)
    put(sftp, "K001_Step2.obj.gz", gzip.compress(obj + b"f 1 3 2\n"))
    (sftp.root / "plain").mkdir()
    (sftp.root / "plain" / "K002_Step1.obj").write_bytes(obj + b"f 3 2 1\n")
    providers = {"meshes": entry(sftp, service="assets", category="obj", steps=["gunzip"]),
                 # no steps: the sha1 is computed while the file downloads
                 "plain": entry(sftp, service="assets", category="obj", directory="/plain")}
    with PullHarness(tmp_path, providers, sftp) as harness:
        assert harness.run_job("meshes")["files"]["ingested"] == 2
        assert harness.run_job("plain")["files"]["ingested"] == 1
        events = read_topics(harness.settings, ["platform.asset-transfer"],
                             lambda found: len(found) >= 6)
    by_kind = sorted((e["type"], e["file_name"], e["uncompressed_sha1_hash"]) for e in events)
    assert by_kind == sorted(
        (f"sdc_asset_transfer_file_{kind}", name, hashlib.sha1(data).hexdigest())  # noqa: S324
        for kind in ("created", "uploaded")
        for name, data in (("K001_Step1.obj", obj), ("K001_Step2.obj", obj + b"f 1 3 2\n"),
                           ("K002_Step1.obj", obj + b"f 3 2 1\n")))
