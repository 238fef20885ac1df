"""Pages checked in a real headless browser: the system's Chromium (Debian's `chromium` package,
installed by .ci/run), driven by Playwright. No browser is downloaded (`playwright install` is not
used). Without Chromium a test fails, unless SIFT_TEST_SKIP_BROWSER=1 says to skip it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
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
