"""Debian's Chromium driven by Playwright (sync API), for the dashboard tests.

Playwright's own browser downloads are never used: the tests launch the ``chromium`` package's
binary. When it is missing the tests that need it are skipped with the reason, unless
``CANARYGUARD_REQUIRE_SERVICES=1`` (CI, whose ``.ci/run`` installs it), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

REQUIRE_SERVICES = os.environ.get("CANARYGUARD_REQUIRE_SERVICES") == "1"
CHROMIUM = os.environ.get("CANARYGUARD_TEST_CHROMIUM", "/usr/bin/chromium")
# no sandbox: CI runs as root, where Chromium's sandbox refuses to start; the rest keeps the
# browser from calling Google's services, which a test machine may not reach
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> str:
    """The path of Chromium, or skip (fail in CI) saying why."""
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    problem = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if REQUIRE_SERVICES:
        pytest.fail(f"CANARYGUARD_REQUIRE_SERVICES=1 but {problem}")
    pytest.skip(f"SKIPPING BROWSER TEST: {problem}")


@contextmanager
def chromium() -> Iterator[Browser]:
    """Chromium, headless, launched by Playwright from the Debian package."""
    path = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
