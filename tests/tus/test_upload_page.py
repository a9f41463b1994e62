"""The /upload/ page (Uppy Dashboard + tus plugin) in a real browser: Debian's chromium
driven by Playwright against a real ``python app.py``. A file is dropped on the
Dashboard, paused mid-upload (its offset stays put), resumed, and the page shows its
request id and, at the end, ``available``. Screenshot: test-output/upload-page.png."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import ROOT, Gateway
from tests.tus.client import Tus
from tests.tus.stored import status

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-output" / "upload-page.png"
SIZE = 48 * 1024 * 1024

DROP = """async (size) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    window.expectedSha256 = [...new Uint8Array(digest)]
        .map((b) => b.toString(16).padStart(2, '0')).join('');
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], 'lab-mesh.tgz', { type: 'application/gzip' }));
    return transfer;
}"""


def test_pages_files_only(gateway: Gateway) -> None:
    for path, statuses in (("/upload/", {200}), ("/upload/vendor/LICENSE-uppy", {200}),
                           ("/upload/package.json", {404}), ("/upload/../page.py", {403, 404})):
        try:
            with urllib.request.urlopen(gateway.base + path, timeout=10) as answer:
                assert answer.status in statuses, path
        except urllib.error.HTTPError as exc:
            assert exc.code in statuses, path
            assert exc.headers["Content-Type"] == "application/json"


def test_drop_pause_resume_available(gateway: Gateway) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: apt-get install -y chromium")
    tus = Tus(gateway.base, None)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(gateway.base + "/upload/")
            page.select_option("#service", "testareno")
            page.fill("#category", "lab")
            sync_api.expect(page.locator("#filetype")).to_have_text(
                "application/vnd.redhat.testareno.lab")
            transfer = page.evaluate_handle(DROP, SIZE)
            page.dispatch_event(".uppy-Dashboard-AddFiles", "drop", {"dataTransfer": transfer})
            sync_api.expect(page.locator(".uppy-Dashboard-Item")).to_have_count(1)
            # slow the PATCHes down so that the pause lands mid-upload
            page.route("**/api/v1/tus/*",
                       lambda route: (time.sleep(0.3), route.continue_()))  # type: ignore[func-returns-value]
            page.get_by_role("button", name="Upload 1 file").click()
            page.wait_for_function("() => window.uppy.getFiles()[0].progress.bytesUploaded > 0")
            page.get_by_role("button", name="Pause").first.click()
            upload_url = page.evaluate("() => window.uppy.getFiles()[0].tus.uploadUrl")
            path = tus.path(upload_url)
            time.sleep(1.5)
            paused_at = tus.offset(path)
            time.sleep(1.5)
            assert tus.offset(path) == paused_at < SIZE  # nothing moves while paused
            page.unroute("**/api/v1/tus/*")
            page.get_by_role("button", name="Resume").first.click()
            state = page.locator("#uploads tbody tr td").nth(2)
            sync_api.expect(state).to_have_text("available", timeout=60_000)
            request_id = page.locator("#uploads tbody tr td").nth(1).inner_text()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            expected = page.evaluate("() => window.expectedSha256")
        finally:
            browser.close()
    found = status(gateway, request_id, None)
    assert found["status"] == "available"
    assert found["size"] == SIZE and found["checksums"]["sha256"] == expected
    assert paused_at > 0
