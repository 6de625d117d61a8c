"""The system's headless Chromium (``/usr/bin/chromium`` and its driver; ``.ci/run`` installs
them), as both the browser tests and B8 start it: nothing is downloaded at run time."""

from __future__ import annotations

import os

from selenium import webdriver

CHROMIUM = os.environ.get("TUTOR_TIMES_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TUTOR_TIMES_CHROMEDRIVER", "/usr/bin/chromedriver")


def headless_options(width: int, height: int) -> webdriver.ChromeOptions:
    """Headless, quiet (no first-run pages, extensions or background traffic), a window of
    ``width`` × ``height``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root in a container, Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    return options
