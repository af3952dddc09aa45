"""The page at ``GET /`` in a real headless browser: Debian's chromium driven by selenium
against a uvicorn server on 127.0.0.1. A person's steps: type a text, press the button,
see the labels as bars and the tokens shaded; a screenshot is kept in the test's folder.

chromium and chromium-driver come from ``scripts/setup.sh`` (Debian packages, as root);
without them the test is skipped."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("captum")
pytest.importorskip("selenium")
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tiny_classifier import train_tiny  # type: ignore[import-not-found]
from ulmfit.inference import num_threads
from ulmfit.serve.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver"
)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with num_threads(1):
        clf = train_tiny(max_len=24)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        app = create_app(lambda: clf)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_the_page_shows_labels_and_shaded_tokens(server_url: str, tmp_path: Path) -> None:
    opts = Options()
    assert CHROMIUM is not None and DRIVER is not None
    opts.binary_location = CHROMIUM
    # No network here: without these, chromium keeps trying to reach Google's services.
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1200,900", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(server_url + "/")
        # The page redraws #labels and #tokens after each answer: an element found just
        # before a redraw is stale when read, so a wait retries on that (a CI run failed on
        # it), and the checks after a wait read the page only once it is idle (no data-busy).
        wait = WebDriverWait(
            driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        idle = "return document.body.dataset.busy === undefined"
        wait.until(lambda d: "classifier" in d.find_element(By.ID, "info").text)
        driver.find_element(By.ID, "text").send_keys("the plot was really good and the actor")
        driver.find_element(By.ID, "go").click()
        wait.until(
            lambda d: (
                d.execute_script(idle) and d.find_elements(By.CSS_SELECTOR, "#tokens span.token")
            )
        )
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#labels .label .name")]
        assert sorted(names) == ["neg", "pos"]
        chosen = driver.find_element(By.CSS_SELECTOR, "#labels .label.chosen .name").text
        assert chosen == "pos"
        bars = driver.find_elements(By.CSS_SELECTOR, "#labels .label .bar")
        assert all(b.size["width"] > 0 for b in bars[:1])
        tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens span.token")
        words = [t.text for t in tokens]
        assert "good" in words and words[0] == "xxbos"
        weight = {t.text: float(t.get_attribute("data-importance") or 0) for t in tokens}
        assert max(weight, key=lambda w: abs(weight[w])) == "good"
        shade = tokens[words.index("good")].value_of_css_property("background-color")
        assert shade.startswith("rgba(46, 160, 67") and not shade.endswith(", 0)")
        # Explaining the other label: the keyword now weighs against it.
        driver.find_elements(By.CSS_SELECTOR, "#labels .label")[names.index("neg")].click()
        chosen_now = "return document.querySelector('#labels .label.chosen .name').textContent"
        wait.until(lambda d: d.execute_script(idle) and d.execute_script(chosen_now) == "neg")
        assert driver.find_element(By.ID, "error").text == ""
        shot = tmp_path / "page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
