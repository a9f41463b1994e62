"""The staff page in a real browser (Debian's chromium, driven by Playwright) against a real
``python app.py``: search a case, associate its files with a plan before their uploads are
announced, and watch the bundle appear. The test plays the watcher (HTTP uploads of
``assets`` payloads and the asset-transfer events) and answers the verdicts itself, so it
does not depend on which validators ``all`` runs (a second verdict is a duplicate).
Screenshots are saved as test-output/staff.png and test-output/staff-*.png."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest

from bus import OutMessage, get_bus
from core.settings import Settings
from tests.consumer.lab import EVENT_TYPES, obj_mesh
from tests.e2e import ROOT, Gateway, fetch

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-output" / "staff.png"
CONTENT_TYPE = "application/vnd.redhat.assets.obj"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    running = Gateway({"WORKDIR": str(tmp_path / "work")}).start()
    yield running
    running.stop()


def publish(settings: Settings, messages: list[OutMessage]) -> None:
    bus = get_bus(settings)
    producer = bus.producer()
    try:
        assert all(producer.send(messages, 10.0))
    finally:
        producer.close()
        bus.close()


def transfer_event(kind: str, name: str, data: bytes, request_id: str) -> OutMessage:
    value = {"type": EVENT_TYPES[kind], "file_name": name,
             "uncompressed_sha1_hash": hashlib.sha1(data).hexdigest(), "request_id": request_id}
    return OutMessage("platform.asset-transfer", request_id, json.dumps(value).encode())


STAFF_USER, STAFF_PASSWORD = "dr.staff", "a long enough password"


def add_staff_user(gateway: Gateway, name: str = STAFF_USER, password: str = STAFF_PASSWORD) -> None:
    """The way an operator adds one: ``python app.py users add`` (password on stdin)."""
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "users", "add", name],
                          input=password + "\n", text=True, capture_output=True, env=gateway.env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr


def sign_in(page: Any, gateway: Gateway) -> None:
    """Open /staff/, get sent to the sign-in page, sign in, land back on /staff/."""
    add_staff_user(gateway)
    page.goto(gateway.base + "/staff/")
    assert "/auth/login" in page.url
    page.fill("#login-user", STAFF_USER)
    page.fill("#login-password", STAFF_PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(gateway.base + "/staff/")
    page.locator("#user-name").wait_for()
    assert page.locator("#user-name").text_content() == STAFF_USER


def test_staff_associates_and_watches_the_bundle_appear(gateway: Gateway) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: apt-get install -y chromium")
    settings = Settings.from_env(gateway.env)
    case = f"CASE{uuid.uuid4().hex[:6].upper()}"
    files = {f"{case}_Step{n}.obj": obj_mesh(n) for n in (1, 2)}
    request_ids = {}
    for name, data in files.items():
        code, answer = gateway.upload(data, content_type=CONTENT_TYPE)
        assert code == 202, answer
        request_ids[name] = answer["request_id"]
    publish(settings, [transfer_event("created", name, data, request_ids[name])
                       for name, data in files.items()]
            + [transfer_event("created", f"{case} export.obj", b"stray", "stray-1")])
    plan_uuid = str(uuid.uuid4())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            sign_in(page, gateway)
            unmatched = page.locator("#unmatched tbody tr", has_text=f"{case} export.obj")
            sync_api.expect(unmatched).to_contain_text("does not match")
            # the expected name in words with an example, not the raw regular expression
            sync_api.expect(unmatched).to_contain_text("for example C12345_Step1.obj")
            sync_api.expect(unmatched).not_to_contain_text("(?P<")
            page.fill("#case-number", case)
            page.click("#search")
            rows = page.locator("#transfers tbody tr")
            sync_api.expect(rows).to_have_count(2)
            sync_api.expect(rows.first).to_contain_text("created")
            for box in page.locator("#transfers tbody input[type=checkbox]").all():
                box.check()
            page.fill("#plan-uuid", plan_uuid)
            page.click("#associate")
            sync_api.expect(page.locator("#message")).to_contain_text("Associated 2 file(s)")
            sync_api.expect(page.locator("#plan-status")).to_have_text("waiting")
            # recorded as the signed-in user
            sync_api.expect(page.locator("#plan-transfers tbody tr").first).to_contain_text(STAFF_USER)
            # the uploads finish after the association; the verdicts follow
            publish(settings, [transfer_event("uploaded", name, data, request_ids[name])
                               for name, data in files.items()])
            publish(settings, [OutMessage("platform.upload.validation", rid, json.dumps(
                {"request_id": rid, "validation": "success"}).encode()) for rid in request_ids.values()])
            link = page.locator("#assets a.bundle-link")
            sync_api.expect(link).to_be_visible(timeout=30_000)
            sync_api.expect(page.locator("#plan-status")).to_have_text("bundled")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            href = link.get_attribute("href")
        finally:
            browser.close()
    assert href
    with zipfile.ZipFile(io.BytesIO(fetch(href))) as archive:
        assert archive.namelist() == sorted(files)
        assert {name: archive.read(name) for name in files} == files



# Issue 13, the staff page: one gateway and one signed-in browser for the module, a case of
# its own for each test, one test per item (each fails against the page before the fix).
ZONE = "Asia/Kathmandu"  # +05:45: a local time that no UTC clock shows


@dataclass
class Staff:
    gateway: Gateway
    settings: Settings
    page: Any
    expect: Any
    staff_key: dict[str, str]

    def case(self, invalid: bool = False) -> tuple[str, dict[str, bytes]]:
        """A new case: Step1 exported twice (same name, other bytes), Step2, and with
        ``invalid`` a Step3 that failed validation; returns the case and Step1's exports."""
        case = f"CASE{uuid.uuid4().hex[:6].upper()}"
        def mesh(n: int) -> bytes:  # the content is the record's key: this case's own
            return obj_mesh(n) + f"# {case}\n".encode()

        exports = {f"re-{case}-{n}": mesh(n) for n in (1, 2)}
        events = [transfer_event("created", f"{case}_Step1.obj", data, rid) for rid, data in exports.items()]
        events.append(transfer_event("created", f"{case}_Step2.obj", mesh(3), f"s2-{case}"))
        verdicts = []
        if invalid:
            bad = f"not an OBJ mesh {case}\n".encode()
            code, answer = self.gateway.upload(bad, content_type=CONTENT_TYPE)
            assert code == 202, answer
            rid = answer["request_id"]
            events.append(transfer_event("created", f"{case}_Step3.obj", bad, rid))
            verdicts.append(OutMessage("platform.upload.validation", rid, json.dumps(
                {"request_id": rid, "validation": "failure", "reason": "no vertices"}).encode()))
        publish(self.settings, events)
        if verdicts:
            publish(self.settings, verdicts)
        return case, exports

    def show(self, case: str, count: int) -> Any:
        """Open the page, search ``case``, wait for its ``count`` rows; returns the rows."""
        self.page.goto(self.gateway.base + "/staff/")
        self.page.fill("#case-number", case)
        self.page.click("#search")
        rows = self.page.locator("#transfers tbody tr")
        self.expect(rows).to_have_count(count, timeout=30_000)
        return rows

    def row(self, name: str) -> Any:
        return self.page.locator("#transfers tbody tr", has_text=name)

    def shot(self, name: str) -> None:
        path = ROOT / "test-output" / f"staff-{name}.png"
        path.parent.mkdir(exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)


@pytest.fixture(scope="module")
def staff(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staff]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: apt-get install -y chromium")
    gateway = Gateway({"WORKDIR": str(tmp_path_factory.mktemp("staff") / "work")}).start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1000}, locale="en-GB",
                                        timezone_id=ZONE)
                sign_in(page, gateway)
                yield Staff(gateway, Settings.from_env(gateway.env), page, sync_api.expect,
                            gateway.api_key("staff"))
            finally:
                browser.close()
    finally:
        gateway.stop()


def api_post(gateway: Gateway, path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    request = urllib.request.Request(gateway.base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_staff_invalid_uuid_gets_the_pages_message_beside_the_field(staff: Staff) -> None:
    page, expect = staff.page, staff.expect
    page.goto(staff.gateway.base + "/staff/")
    page.fill("#plan-uuid", "not-a-uuid")
    page.click("#associate")
    error = page.locator("#plan-uuid-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("is not a treatment plan uuid")
    expect(error).to_contain_text("8-4-4-4-12")
    expect(page.locator("#plan-uuid")).to_have_attribute("aria-invalid", "true")
    staff.shot("bad-uuid")
    page.fill("#plan-uuid", str(uuid.uuid4()))
    expect(error).to_be_hidden()


def test_staff_error_is_cleared_by_a_later_success(staff: Staff) -> None:
    page, expect = staff.page, staff.expect
    case, _ = staff.case()
    page.goto(staff.gateway.base + "/staff/")
    page.fill("#plan-uuid", str(uuid.uuid4()))
    page.click("#associate")  # nothing selected
    expect(page.locator("#message")).to_contain_text("Select at least one file")
    page.fill("#case-number", case)
    page.click("#search")
    expect(page.locator("#transfers tbody tr")).to_have_count(3, timeout=30_000)
    expect(page.locator("#message")).not_to_contain_text("Select at least one file")
    expect(page.locator("#message")).not_to_have_class("error")


def test_staff_case_is_in_the_url_and_survives_a_reload(staff: Staff) -> None:
    page, expect = staff.page, staff.expect
    case, _ = staff.case()
    staff.show(case, 3)
    assert f"case={case}" in page.url
    page.reload()
    expect(page.locator("#case-number")).to_have_value(case)
    expect(page.locator("#transfers tbody tr")).to_have_count(3, timeout=30_000)


def test_staff_reexported_file_rows_are_told_apart(staff: Staff) -> None:
    case, exports = staff.case()
    staff.show(case, 3)
    twice = staff.row(f"{case}_Step1.obj")
    staff.expect(twice).to_have_count(2)
    for data in exports.values():
        staff.expect(twice.filter(has_text=hashlib.sha1(data).hexdigest()[:8])).to_have_count(1)
    staff.expect(twice.first).to_contain_text("export 1 of 2")
    staff.expect(twice.nth(1)).to_contain_text("export 2 of 2")
    staff.shot("re-export")


def test_staff_timestamps_are_local_to_the_second_with_iso_in_the_title(staff: Staff) -> None:
    case, _ = staff.case()
    publish(staff.settings, [transfer_event("created", f"{case} stray.obj", case.encode(), f"x-{case}")])
    staff.show(case, 3)
    stamp = staff.row(f"{case}_Step2.obj").locator("time")
    iso = stamp.get_attribute("title")
    assert iso, "no ISO title on the received time"
    local = dt.datetime.fromisoformat(iso).astimezone(ZoneInfo(ZONE))
    text = stamp.text_content() or ""
    assert local.strftime("%H:%M:%S") in text and local.strftime("%Y") in text, (text, iso)
    assert "T" not in text and not re.search(r"\.\d{3,}", text), text
    unmatched = staff.page.locator("#unmatched tbody tr", has_text=f"{case} stray.obj").locator("time")
    staff.expect(unmatched).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\dT"))
    staff.expect(unmatched).not_to_contain_text("T")


def test_staff_rows_that_cannot_be_selected_say_why(staff: Staff) -> None:
    case, _ = staff.case(invalid=True)
    staff.show(case, 4)
    invalid = staff.row(f"{case}_Step3.obj")
    staff.expect(invalid).to_contain_text("invalid", timeout=30_000)
    staff.expect(invalid.locator("input[type=checkbox]")).to_be_disabled()
    staff.expect(invalid).to_have_attribute("title", re.compile("failed validation: no vertices"))
    staff.expect(invalid.locator(".why")).to_have_text("failed validation")
    staff.shot("why-not")


def test_staff_select_all_ticks_the_selectable_rows(staff: Staff) -> None:
    page, expect = staff.page, staff.expect
    case, _ = staff.case(invalid=True)
    staff.show(case, 4)
    invalid = staff.row(f"{case}_Step3.obj")
    expect(invalid.locator("input[type=checkbox]")).to_be_disabled(timeout=30_000)
    page.check("#select-all")
    expect(page.locator("#transfers tbody input:checked")).to_have_count(3)
    expect(invalid.locator("input[type=checkbox]")).not_to_be_checked()
    staff.shot("select-all")
    page.uncheck("#select-all")
    expect(page.locator("#transfers tbody input:checked")).to_have_count(0)


def test_staff_conflict_names_the_file_and_refreshes_the_table(staff: Staff) -> None:
    """Someone else associates Step2 with another plan just before this page does (the
    route runs their request first): the 409 names the file and the table shows it."""
    page, expect = staff.page, staff.expect
    case, _ = staff.case()
    staff.show(case, 3)
    second = staff.row(f"{case}_Step2.obj")
    step2_id = int(second.get_attribute("data-id") or 0)
    plan_a, plan_b = str(uuid.uuid4()), str(uuid.uuid4())
    answers: list[int] = []

    def other_staff_first(route: Any) -> None:
        answers.append(api_post(staff.gateway, f"/api/v1/treatment-plans/{plan_b}/asset-transfers",
                                {"transfer_ids": [step2_id]}, staff.staff_key))
        route.continue_()

    page.route(f"**/treatment-plans/{plan_a}/asset-transfers", other_staff_first)
    try:
        second.locator("input[type=checkbox]").check()
        page.fill("#plan-uuid", plan_a)
        page.click("#associate")
        message = page.locator("#message")
        expect(message).to_contain_text("already associated", timeout=30_000)
        assert answers == [200]
        expect(message).to_contain_text(f"{case}_Step2.obj")
        expect(message).not_to_contain_text("asset transfer")
        expect(second).to_contain_text(plan_b)
        expect(second.locator("input[type=checkbox]")).to_be_disabled()
        expect(second).to_have_attribute("title", re.compile("already associated"))
        staff.shot("conflict")
    finally:
        page.unroute(f"**/treatment-plans/{plan_a}/asset-transfers")


def test_staff_page_refreshes_by_itself(staff: Staff) -> None:
    case, _ = staff.case()
    rows = staff.show(case, 3)
    fourth = transfer_event("created", f"{case}_Step4.obj", obj_mesh(4) + case.encode(), f"s4-{case}")
    publish(staff.settings, [fourth])
    staff.expect(rows).to_have_count(4, timeout=30_000)
    staff.expect(staff.row(f"{case}_Step4.obj")).to_contain_text("created")
    staff.shot("refreshed")
