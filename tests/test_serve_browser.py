"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, uploads
the bundled recording through the web page, sees the result rendered and downloads the
report. Skips cleanly where Chromium or Playwright is absent. The screenshot goes to
``out/e2e/serve_page.png`` (or ``$PULMO_E2E_DIR``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pulmo.inference.bundled import ASSETS
from pulmo.serve.app import ServeSettings
from tests.serve_helpers import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def test_upload_through_the_page_renders_the_result_and_the_report(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    shots = Path(os.environ.get("PULMO_E2E_DIR", Path(__file__).resolve().parents[1] / "out" / "e2e"))
    shots.mkdir(parents=True, exist_ok=True)
    demo = ASSETS / "demo_lung_sounds.flac"
    with LiveServer(ServeSettings(storage=tmp_path / "serve")) as srv, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400}, accept_downloads=True)
            page.goto(srv.base + "/")
            page.wait_for_selector("#task option[value='lung-sounds']", state="attached")
            page.set_input_files("#file", str(demo))
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
            headline = page.inner_text("#main .headline")
            assert "cycles from segmenter" in headline, headline
            assert page.inner_text("#status").startswith("Done: lung-sounds+resp-rate")
            assert "stethoscope recording" in page.inner_text("#routing")
            width = page.eval_on_selector("#main figure img", "img => img.complete ? img.naturalWidth : 0")
            assert width > 500
            rows = page.eval_on_selector_all("#main table tr", "rows => rows.length")
            assert rows == 1 + int(headline.split()[0])  # header + one row per cycle
            assert "SHA-256" in page.inner_text("#provenance")
            assert page.inner_text("#also h2") == "Also: resp-rate" and "breaths/min" in page.inner_text("#also .headline")
            analysis_id = page.inner_text("#analysis-id")
            assert page.url.endswith(f"/?analysis={analysis_id}")
            page.screenshot(path=str(shots / "serve_page.png"), full_page=True)
            with page.expect_download() as dl:
                page.click("#report")
            saved = tmp_path / "report.html"
            dl.value.save_as(saved)
            assert dl.value.suggested_filename == "pulmo-report-demo_lung_sounds.html"
            assert headline in saved.read_text() and "data:image/png;base64," in saved.read_text()

            page.goto(srv.base + f"/?analysis={analysis_id}")  # the permalink shows the same result after a reload
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            assert page.inner_text("#main .headline") == headline

            page.set_input_files("#file", files=[{"name": "notes.wav", "mimeType": "audio/wav", "buffer": b"not audio"}])
            page.click("#submit")
            page.wait_for_selector("#status.error")
            assert "not a recognised audio" in page.inner_text("#status")
        finally:
            browser.close()
    assert (shots / "serve_page.png").stat().st_size > 10_000
