"""Issue 6, item 10: the malformed-input corpus (tests/security/corpus/) against a running
gateway. Never a 5xx, never a crash, never a lost payload: valid uploads sent between the
malformed ones, and malformed ones the gateway accepts, all reach ``available``; malformed
verdicts, announcements and events on the bus are skipped and later valid ones still work.
"""
from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import pytest

from bus import OutMessage, get_bus
from core.settings import Settings
from tests.e2e import Gateway
from tests.faults.tools import bucket_files, upload, uploads_table
from tests.helpers import wait_for
from tests.security.corpus import http as http_corpus
from tests.security.corpus import messages

VALID_EVERY = 20


def send_raw(port: int, case: http_corpus.Case) -> tuple[int, bytes]:
    """(status, body) of the answer; (0, b"") when the server closed without one."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        try:
            sock.sendall(case.raw)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (or gave up) before the whole request was sent
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            return 0, b""
    finally:
        sock.close()


def problems_in_log(gateway: Gateway) -> list[str]:
    text = gateway.log.read_text(errors="replace")
    return [line for line in text.splitlines()
            if "Traceback" in line or "Uncaught exception" in line or " 500 " in line]


@pytest.fixture
def gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    gw = Gateway({"WORKDIR": str(tmp_path / "work")}).start()
    yield gw
    assert gw.stop() == 0


def test_http_corpus_never_5xx_never_crash_never_loses(gateway: Gateway) -> None:
    cases = list(http_corpus.cases())
    assert len(cases) >= 200
    settings = Settings.from_env(gateway.env)
    accepted: set[str] = set()
    failures: list[str] = []
    for number, case in enumerate(cases):
        status, body = send_raw(gateway.port, case)
        allowed = case.expect or frozenset(range(200, 500))
        if not (status in allowed or (status == 0 and case.may_close)):
            failures.append(f"{case.name}: {status} {body[:200]!r}")
        if status == 202:
            accepted.add(json.loads(body)["request_id"])
        if number % VALID_EVERY == 0:
            result = upload(gateway.port, f"valid upload after {case.name}".encode())
            assert result.status == 202, (case.name, result)
            accepted.add(result.request_id)  # type: ignore[arg-type]
        assert gateway.process is not None and gateway.process.poll() is None, \
            f"gateway died on {case.name}"
    print(f"\nHTTP corpus: {len(cases)} malformed requests, {len(accepted)} uploads accepted "
          "(valid ones between them and harmless malformed ones)")
    assert not failures, "\n".join(failures)

    def all_available() -> bool:
        rows = uploads_table(settings.workdir)
        return all(rows.get(rid, {}).get("status") == "available" for rid in accepted)
    assert wait_for(all_available, 90, interval=0.3), "an accepted upload was lost"
    for bucket in settings.buckets.values():
        assert not bucket_files(settings.workdir, bucket)[1], f"{bucket}: partial data left"
    assert wait_for(lambda: not bucket_files(settings.workdir, settings.s3_quarantine)[0], 10)
    operator = gateway.api_key("status")  # the accepted uploads carry assorted identities
    assert gateway.status(next(iter(accepted)), headers=operator)["status"] == "available"
    assert not problems_in_log(gateway), problems_in_log(gateway)[:20]


def test_malformed_bus_messages_are_skipped_and_valid_ones_still_work(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path / "work"), "TEST_VALIDATOR_VERDICT": "handoff"}
    gateway = Gateway(env).start()
    settings = Settings.from_env(gateway.env)
    bus = get_bus(settings)
    producer = bus.producer()
    try:
        first = upload(gateway.port, b"before the corpus")
        assert first.status == 202
        assert wait_for(lambda: gateway.status(first.request_id)["status"] == "handed_off", 30)
        real = first.request_id
        assert real is not None
        sent = [OutMessage("platform.upload.validation", "corpus", raw)
                for _, raw in messages.verdicts(real)]
        sent += [OutMessage("platform.upload.testareno", "corpus", raw)
                 for _, raw in messages.announcements(real)]
        sent += [OutMessage("platform.asset-transfer", "corpus", raw)
                 for _, raw in messages.events(real)]
        assert all(producer.send(sent, 30))
        print(f"\nbus corpus: {len(sent)} malformed messages")
        # the validator still answers later announcements...
        second = upload(gateway.port, b"after the corpus")
        assert second.status == 202
        assert wait_for(lambda: gateway.status(second.request_id)["status"] == "handed_off", 60), \
            "the validator stopped answering after the malformed announcements"
        assert gateway.status(real)["status"] == "handed_off"  # no malformed verdict applied
        # ...and the gateway still applies later valid verdicts
        finals = [OutMessage("platform.upload.validation", rid,
                             json.dumps({"request_id": rid, "validation": "success"}).encode())
                  for rid in (real, second.request_id)]
        assert all(producer.send(finals, 10))
        assert wait_for(lambda: all(gateway.status(r)["status"] == "available"
                                    for r in (real, second.request_id)), 60), \
            "valid verdicts were not applied after the malformed ones"
        assert gateway.process is not None and gateway.process.poll() is None
        assert not problems_in_log(gateway), problems_in_log(gateway)[:20]
    finally:
        producer.close()
        bus.close()
        assert gateway.stop() == 0
