"""Pages checked in a real headless browser: the system's Chromium (Debian's `chromium` and
`chromium-driver` packages, installed by .ci/run). No browser is downloaded: Playwright is given the
executable, Selenium the driver. Without Chromium a test fails, unless SIFT_TEST_SKIP_BROWSER=1 says
to skip it (the browser tests are part of `make test`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1366,900",
)


def chromium_path() -> str:
    """The system Chromium; fails the test (or skips it with SIFT_TEST_SKIP_BROWSER=1) when there is none."""
    found = os.environ.get("SIFT_TEST_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), shutil.which("chromium")
    )
    if found:
        return found
    if os.environ.get("SIFT_TEST_SKIP_BROWSER") == "1":
        pytest.skip("no Chromium, and SIFT_TEST_SKIP_BROWSER=1")
    pytest.fail("no Chromium: `apt-get install -y chromium chromium-driver` (.ci/run does), or SIFT_TEST_CHROMIUM=PATH")


@contextmanager
def page() -> Iterator[Any]:
    """A new page of a headless Chromium; the browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=list(ARGS), headless=True)
        try:
            context = browser.new_context()
            yield context.new_page()
        finally:
            browser.close()


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium whose console log can be read (`console_errors`)."""
    binary = chromium_path()
    if shutil.which(CHROMEDRIVER) is None:
        pytest.fail(f"{CHROMEDRIVER} missing: `apt-get install -y chromium chromium-driver` (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The browser console's errors since the last call (the log is drained by reading it)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
