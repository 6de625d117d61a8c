"""The system's headless Chromium (``chromium`` and ``chromedriver`` on ``PATH``, Debian's
``/usr/bin`` ones; ``.ci/run`` installs them), as both the browser tests and B8 start it:
nothing is downloaded at run time. ``TUTOR_TIMES_CHROMIUM`` and ``TUTOR_TIMES_CHROMEDRIVER``
name others (a path, or a name looked up on ``PATH``)."""

from __future__ import annotations

import os
import shutil

from selenium import webdriver

CHROMIUM = os.environ.get("TUTOR_TIMES_CHROMIUM", "chromium")
CHROMEDRIVER = os.environ.get("TUTOR_TIMES_CHROMEDRIVER", "chromedriver")


class ChromiumMissing(LookupError):
    """Chromium or its driver is not installed (the message says which, and how to)."""


def located() -> tuple[str, str]:
    """The paths of (chromium, chromedriver), found as the shell would find them."""
    found = [shutil.which(name) for name in (CHROMIUM, CHROMEDRIVER)]
    for name, path in zip((CHROMIUM, CHROMEDRIVER), found, strict=True):
        if path is None:
            raise ChromiumMissing(
                f"{name} is not installed or not on PATH (apt-get install chromium chromium-driver)"
            )
    return found[0] or CHROMIUM, found[1] or CHROMEDRIVER


def headless_options(width: int, height: int) -> webdriver.ChromeOptions:
    """Headless, quiet (no first-run pages, extensions or background traffic), a window of
    ``width`` × ``height``."""
    options = webdriver.ChromeOptions()
    options.binary_location = located()[0]
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
