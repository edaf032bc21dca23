"""The app in a real browser: `python cli.py app` on a free local port, driven by Playwright.

Headless Chromium from the system (Debian's `chromium` package, which `.ci/run`
installs when it can; Playwright's own browser download is not available offline)
opens the app serving a `cv`-style ensemble (two stand-in members), uploads a
synthetic DICOM, a file that is not an image and one over the upload limit, waits
for the probability, the members' spread and the mean-map overlay, checks each
file's message and saves a screenshot. Skipped, with the reason printed, only when
no Chromium can be found. Runs in the TensorFlow pass (the app computes Grad-CAM).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import keras
import pytest
from model_fixtures import contract_ensemble

from pneumokeras.app.examples import synthetic_examples

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="the app computes Grad-CAM (tf-keras-vis), which needs the TensorFlow backend",
    ),
]

REPO = Path(__file__).resolve().parents[2]
SIZE = 64
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
START_TIMEOUT = 240  # seconds: the server imports Streamlit; the page loads TensorFlow
WAIT_MS = 180_000


def find_chromium() -> str | None:
    """Debian's chromium (or a Chromium named by PNEUMOKERAS_CHROMIUM), else None."""
    for candidate in (
        os.environ.get("PNEUMOKERAS_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    """Polls Streamlit's health endpoint (bounded); fails early if the server exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the app exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the app did not answer within {START_TIMEOUT} s:\n{log.read_text()[-2000:]}")


def test_upload_in_headless_chromium(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        reason = (
            "no Chromium: install Debian's chromium package (apt-get install chromium) "
            "or set PNEUMOKERAS_CHROMIUM"
        )
        print(f"SKIP test_upload_in_headless_chromium: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    run = tmp_path / "cv"
    run.mkdir()
    ensemble = contract_ensemble(SIZE, run)
    dicom = synthetic_examples()[0].data
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [
                sys.executable,
                "cli.py",
                "app",
                "--model",
                str(ensemble),
                "--port",
                str(port),
                "--max-upload-mb",
                "1",
            ],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        )
    try:
        wait_until_serving(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(url, timeout=WAIT_MS)
                page.get_by_text("Research and education only").wait_for(timeout=WAIT_MS)
                uploader = page.locator("input[type=file]")
                uploader.wait_for(state="attached", timeout=WAIT_MS)
                uploader.set_input_files(
                    files=[
                        {"name": "patient.dcm", "mimeType": "application/dicom", "buffer": dicom},
                        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"},
                        {"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * 1_300_000},
                    ]
                )
                page.get_by_text("P(pneumonia), calibrated").wait_for(timeout=WAIT_MS)
                page.get_by_text("notes.txt: not a DICOM, PNG or JPEG file").wait_for(
                    timeout=WAIT_MS
                )
                # Over the limit: Streamlit's uploader refuses the file itself.
                page.get_by_text("File must be 1.0MB or smaller.").wait_for(timeout=WAIT_MS)
                # The input as the model sees it and the overlay, both decoded by the browser.
                images = page.locator('[data-testid="stImage"] img')
                page.wait_for_function(
                    "() => { const imgs = [...document.querySelectorAll("
                    "'[data-testid=\"stImage\"] img')]; return imgs.length >= 2 && "
                    "imgs.every(i => i.complete && i.naturalWidth > 0); }",
                    timeout=WAIT_MS,
                )
                assert images.count() == 2
                value = page.locator('[data-testid="stMetricValue"]').inner_text().strip()
                assert re.fullmatch(r"[01]\.\d{3}", value), value
                label = page.get_by_text(re.compile(r"^Label: (pneumonia|normal)")).inner_text()
                assert label.endswith("(threshold 0.400)")
                assert ("pneumonia" in label) == (float(value) >= 0.4)
                # The ensemble: the members' spread and the mean of their maps.
                spread = page.get_by_text(re.compile(r"^Ensemble of 2: members' SD ")).inner_text()
                assert re.search(r"member probabilities [01]\.\d{3}, [01]\.\d{3}", spread)
                page.get_by_text("Grad-CAM of 'pneumonia' at bn of each member").wait_for(
                    timeout=WAIT_MS
                )
                assert page.locator("text=Traceback").count() == 0
                shot = tmp_path / "app_browser.png"
                page.screenshot(path=str(shot))
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                print(f"screenshot: {shot}")
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
