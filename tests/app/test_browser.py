"""The app in a real browser: `spectok app` on a free port, headless chromium, an upload.

Uses Debian's /usr/bin/chromium through Playwright (its own browser download
is not used); skipped, with the reason, when either is missing. Saves the page
as reports/screenshots/browser-test.png (the README shows search.png, taken by
benchmarks/app_speed.py on the shipped model and demo index).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import REPO, csv_bytes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO / "reports" / "screenshots"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sync_playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; CI installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[browser]')")
    return sync_playwright


@pytest.fixture
def running_app(app_data):
    model, index, _ = app_data
    port = free_port()
    env = dict(os.environ, SPECTOK_MODEL=str(model), SPECTOK_INDEX=str(index))
    spectok = Path(sys.executable).with_name("spectok")
    command = [str(spectok)] if spectok.exists() else [sys.executable, "-m", "spectok_core.cli"]
    process = subprocess.Popen(
        [*command, "app", "--headless", "--port", str(port), "--address", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    yield f"http://127.0.0.1:{port}", process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_upload_in_a_real_browser_shows_neighbours(sync_playwright, running_app, app_data, tmp_path):
    url, process = running_app
    spectrum = app_data[2][5]  # an SDSS galaxy of the tiny index
    upload = tmp_path / "my_galaxy.csv"
    upload.write_bytes(csv_bytes(spectrum))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2300})
            while True:  # the server takes a few seconds to listen
                try:
                    page.goto(url + "/Search", wait_until="domcontentloaded", timeout=5000)
                    break
                except Exception:  # noqa: BLE001 - connection refused until it is up
                    assert process.poll() is None, process.stdout.read()[-3000:]
                    assert time.monotonic() - started < 40, "the app did not start within 40 s"
                    time.sleep(0.2)
            page.locator('input[type="file"]').set_input_files(str(upload))
            page.get_by_text("Closest:").wait_for(timeout=40_000)
            page.get_by_text("Download neighbours (CSV)").wait_for(timeout=20_000)
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                                   state="attached", timeout=20_000)
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=20_000)
            page.wait_for_timeout(500)  # let the last plot finish drawing
            page.screenshot(path=str(SCREENSHOTS / "browser-test.png"), full_page=True)
            body = page.inner_text("body")
            assert "Nearest 10 neighbours across surveys" in body
            assert f"Closest: sdss {spectrum.meta['object_id']}" in body  # it finds itself
            assert "Neighbour estimates" in body
            assert page.locator('[data-testid="stDataFrame"]').count() == 1
            assert "Traceback" not in body and "Something went wrong" not in body
        finally:
            browser.close()
    assert (SCREENSHOTS / "search.png").stat().st_size > 20_000
    assert time.monotonic() - started < 60
