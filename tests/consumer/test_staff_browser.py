"""The staff page in a real browser (Debian's chromium, driven by Playwright) against a real
``python app.py``: search a case, associate its files with a plan before their uploads are
announced, and watch the bundle appear. The test plays the watcher (HTTP uploads of
``assets`` payloads and the asset-transfer events) and answers the verdicts itself, so it
does not depend on which validators ``all`` runs (a second verdict is a duplicate).
A screenshot is saved as test-output/staff.png."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

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
