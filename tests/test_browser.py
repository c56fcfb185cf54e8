"""The explorer in a real browser: Voila serves a notebook that builds it, headless Chromium drives it.

Needs Debian's ``chromium`` (``apt-get install chromium``) and the Python packages
``voila`` and ``playwright`` (the package only: its browser download is never used,
Chromium is launched from /usr/bin).  Skips, saying which is missing, otherwise.
Set ``VN_ARTIFACTS`` to a folder to keep the screenshot.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_widgets import NARR, make_project

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 60        # Voila answering HTTP
WIDGET_S = 120             # kernel start, package imports and the first render
STEP_S = 30                # one click's round trip to the kernel


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_app(path: Path, project: Path) -> Path:
    """The notebook Voila serves: build the explorer on the fake project and display it."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from videonarrator.widgets import NarrationExplorer\n"
        f"NarrationExplorer.from_project({str(project)!r})")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def wait_for_http(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"voila exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"voila did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_explorer_in_chromium(tmp_path):
    chromium = chromium_path()
    pytest.importorskip("voila", reason="voila is not installed (pip install voila)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

    project = tmp_path / "project"
    make_project(project)
    app = write_app(tmp_path / "explorer.ipynb", project)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "voila.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "voila", str(app), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
             "--show_tracebacks=True"],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    shot = tmp_path / "explorer.png"
    try:
        wait_for_http(url, server, log, SERVER_START_S)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                                         timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.set_default_timeout(STEP_S * 1000)
                page.goto(url, timeout=WIDGET_S * 1000)
                narration = page.locator(".vn-narration")
                narration.wait_for(state="visible", timeout=WIDGET_S * 1000)
                first = narration.inner_text()
                page.screenshot(path=str(tmp_path / "explorer_clip1.png"), full_page=True)   # a dropped frame
                assert NARR["vtest"][0] in first, first
                assert "A red round lamp for you." in first            # a system row from narrations.json

                page.locator(".vn-next").click()
                page.wait_for_function(
                    "t => document.querySelector('.vn-narration').innerText.includes(t)", arg=NARR["vtest"][1],
                    timeout=STEP_S * 1000)
                second = narration.inner_text()
                assert second != first and NARR["vtest"][0] not in second
                assert "clip 2 / 3" in page.locator(".vn-clip").inner_text()
                page.screenshot(path=str(shot), full_page=True)
                body = page.inner_text("body")
                assert "Traceback" not in body and "Error" not in body, body[-2000:]
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert shot.stat().st_size > 10_000
    if os.environ.get("VN_ARTIFACTS"):
        out = Path(os.environ["VN_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        for name in ("explorer.png", "explorer_clip1.png"):
            shutil.copy(tmp_path / name, out / name)
