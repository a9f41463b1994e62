"""The jobs API: hostile input gets a JSON 4xx; a job posted to a gateway without a puller
is run by a puller in another process (same database)."""
from __future__ import annotations

from pathlib import Path

from auth.keys import create_key
from tests.pull.harness import PullHarness, entry
from tests.pull.sftpserver import SFTPTestServer


def test_errors(tmp_path: Path, sftp: SFTPTestServer) -> None:
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp).start(puller=False) as api:
        cases = [
            ("POST", "/api/v1/pulls/nobody", None, 404, "not_found"),
            ("POST", "/api/v1/pulls/Bad%20Name", None, 404, "not_found"),
            ("GET", "/api/v1/pulls/jobs/" + "0" * 32, None, 404, "not_found"),
            ("GET", "/api/v1/pulls/jobs/..%2F..%2Fetc", None, 404, "not_found"),
            ("GET", "/api/v1/pulls/jobs?limit=0", None, 400, "bad_request"),
            ("GET", "/api/v1/pulls/jobs?limit=abc", None, 400, "bad_request"),
            ("GET", "/api/v1/pulls/jobs?provider=nobody", None, 404, "not_found"),
            ("POST", "/api/v1/pulls/acme", ["not", "an", "object"], 400, "bad_request"),
            ("POST", "/api/v1/pulls/acme", {"retry_failed": "yes"}, 400, "bad_request"),
            ("POST", "/api/v1/pulls/acme", {"surprise": 1}, 400, "bad_request"),
            ("DELETE", "/api/v1/pulls/acme", None, 405, "method_not_allowed"),
            ("POST", "/api/v1/pulls/jobs", None, 405, "method_not_allowed"),
        ]
        for method, path, body, status, code in cases:
            got, answer = api.request(method, path, body)
            assert (got, answer.get("error")) == (status, code), (method, path, answer)
            assert answer.get("message"), answer
        got, answer = api.request("POST", "/api/v1/pulls/acme", None,
                                  headers={**api.auth, "Content-Type": "application/json"})
        assert got == 202 and answer["state"] == "queued"
        assert api.request("GET", answer["url"])[1]["state"] == "queued"
        providers = api.request("GET", "/api/ingress/v1/pulls/providers")[1]["providers"]
        assert [p["name"] for p in providers] == ["acme"] and providers[0]["auth"] == "password"


def test_the_jobs_api_needs_a_key_with_the_pulls_scope(tmp_path: Path, sftp: SFTPTestServer) -> None:
    """Issue 11: anyone could start jobs and read every job's files."""
    with PullHarness(tmp_path, {"acme": entry(sftp)}, sftp).start(puller=False) as api:
        assert api.services is not None
        other = create_key(api.services.database.engine, "ops-admin", ["admin", "staff"])
        paths = [("POST", "/api/v1/pulls/acme"), ("GET", "/api/v1/pulls/jobs"),
                 ("GET", "/api/v1/pulls/jobs/" + "0" * 32), ("GET", "/api/ingress/v1/pulls/providers")]
        for method, path in paths:
            got, answer = api.request(method, path, headers={})
            assert (got, answer["error"]) == (401, "unauthorized"), (method, path)
            got, answer = api.request(method, path, headers={"Authorization": f"Bearer {other}"})
            assert (got, answer["error"]) == (403, "forbidden"), (method, path)
        assert api.request("GET", "/api/v1/pulls/jobs")[0] == 200


def test_a_job_posted_to_a_gateway_is_run_by_a_puller_elsewhere(
        tmp_path: Path, sftp: SFTPTestServer) -> None:
    (sftp.root / "outgoing" / "a.csv").write_bytes(b"a")
    (tmp_path / "gateway").mkdir()
    (tmp_path / "puller").mkdir()
    database = {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite'}"}
    providers = {"acme": entry(sftp)}
    with PullHarness(tmp_path / "gateway", providers, sftp, **database).start(puller=False) as api:
        job_id = api.start_job("acme")
        with PullHarness(tmp_path / "puller", providers, sftp, **database).start(poll_seconds=0.1):
            job = api.wait_job(job_id)
        assert job["state"] == "completed" and job["files"]["ingested"] == 1, job


def test_scheduled_runs_start_by_themselves(tmp_path: Path, sftp: SFTPTestServer) -> None:
    from tests.helpers import wait_for

    (sftp.root / "outgoing" / "a.csv").write_bytes(b"a")
    with PullHarness(tmp_path, {"acme": entry(sftp, schedule="1s")}, sftp).start(
            poll_seconds=0.1) as harness:
        def jobs() -> list[dict[str, object]]:
            return list(harness.request("GET", "/api/v1/pulls/jobs")[1]["jobs"])
        found = wait_for(lambda: len(done := [j for j in jobs() if j["state"] == "completed"])
                         >= 2 and done, timeout=20)
        assert found, jobs()
        assert {j["trigger"] for j in found} == {"schedule"}
        assert sum(j["files"]["ingested"] for j in found) == 1  # the second found nothing new
