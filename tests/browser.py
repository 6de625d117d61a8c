"""A headless Chromium from the distribution's packages, driven by selenium.

Nothing is downloaded at run time: the browser and its driver are the system's
(``chromium`` and ``chromedriver`` on ``PATH``; ``.ci/run`` installs them). Outside CI a
missing browser skips every test that needs it (the browser tests, B8's smoke run) with the
reason; with CI=true it fails them. Those tests carry the ``browser`` marker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

from benchmarks.chromium import ChromiumMissing, headless_options, located

from .conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
#: the browser's own time zone: not UTC, so the page's "the browser's zone" default shows
BROWSER_ZONE = "Australia/Melbourne"
DESKTOP = (1280, 900)
PHONE = (390, 844)


def screenshots_folder() -> Path:
    """Where each run leaves what the browser saw, for a person to look at."""
    folder = Path(os.environ.get("TUTOR_TIMES_SCREENSHOTS", "test-screenshots"))
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"a test that needs the browser cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"no browser: {reason}")


def require_chromium() -> tuple[str, str]:
    """The paths of (chromium, chromedriver). Every test that needs the browser asks here
    first: without it, it skips with the reason outside CI and fails under CI=true."""
    try:
        return located()
    except ChromiumMissing as exc:
        _unavailable(str(exc))
        raise


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium, quit on leaving."""
    driver_path = require_chromium()[1]
    options = headless_options(*DESKTOP)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver_path, env={**os.environ, "TZ": BROWSER_ZONE})
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        _unavailable(f"Chromium did not start: {exc.msg}")
        raise
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The browser console's errors since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def viewport(driver: webdriver.Chrome, width: int, height: int, *, mobile: bool) -> None:
    """The page's viewport exactly this size (a window's size includes its frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def screenshot(driver: webdriver.Chrome, name: str, width: int, *, mobile: bool) -> Path:
    """The whole page at ``width``, saved as ``name``.png."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    viewport(driver, width, min(height, 6000), mobile=mobile)
    path = screenshots_folder() / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path
