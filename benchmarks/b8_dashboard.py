"""B8 dashboard: a unit's dashboard page for a 12-week term, on B3's data.

100k sessions and 1M activities of 200 tutors over two years in four units (B3's). The
convenor of unit 1 asks for the unit's dashboard over a 12-week term: first through the Flask
test client (the role check, every report the page shows and the template's rendering, HTTP
aside), many times; then the JSON reports the page is made of, the same number of times, to
see what the page adds to them. Then a headless Chromium (the system's, driven by selenium)
loads the page from a threaded server on loopback, several times: the Navigation Timing
``loadEventEnd - navigationStart`` of each load, and the part of it the server took.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from benchmarks.b3_reports import convenor, ranges, years_of_data
from benchmarks.chromium import ChromiumMissing, headless_options, located
from benchmarks.common import DATABASE_URL, arguments, percentiles, save, smoke_url, time_calls

UNIT = "/tutor-times/units/1"
WAIT = 30  # seconds, for a page on a loaded machine
#: the JSON reports behind the page's tables and its calendar
PARTS = {
    "summary": f"{UNIT}/summary",
    "timeline": f"{UNIT}/timeline",
    "tasks": f"{UNIT}/tasks",
    "sessions": f"{UNIT}/sessions",
}


def term_query() -> str:
    """B3's 12-week term, in UTC (the page's default zone when the URL names one)."""
    return ranges(datetime.now(timezone.utc))["a 12-week term"] + "&tz=UTC"


def server_times(client: FlaskClient, query: str, calls: int) -> dict[str, Any]:
    """The page's p50/p99 through the app, and each JSON report's, in turns."""
    page = f"{UNIT}/dashboard?{query}"
    parts = {name: f"{path}?{query}" for name, path in PARTS.items()}
    parts["timeline"] += "&bucket=week"  # the page's own bucket for a term
    # the calendar: the sessions of the range's last seven days (the default range)
    parts["sessions"] = f"{PARTS['sessions']}?tz=UTC&per_page=500"
    for path in (page, *parts.values()):
        for _ in range(3):  # warm: plans, caches, templates
            r = client.get(path)
            assert r.status_code == 200, r.get_data(as_text=True)[:300]
    samples: dict[str, list[int]] = {"page": [], **{name: [] for name in parts}}
    for _ in range(calls):  # interleaved, so a busy moment of the machine hits every one
        samples["page"] += time_calls(lambda: client.get(page), 1)
        for name, path in parts.items():
            samples[name] += time_calls(lambda p=path: client.get(p), 1)
    return {name: percentiles(s) for name, s in samples.items()}


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on a loopback port, a thread per request; its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def headless_chromium() -> Iterator[webdriver.Chrome]:
    """The system's Chromium, headless, quit on leaving."""
    try:
        driver_path = located()[1]
    except ChromiumMissing as exc:
        raise SystemExit(str(exc)) from None
    options = headless_options(1280, 900)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


NAVIGATION = """
const t = performance.timing;
if (!t.loadEventEnd) return null;
return [t.loadEventEnd - t.navigationStart, t.responseEnd - t.requestStart];
"""


def one_load(driver: webdriver.Chrome, url: str) -> tuple[int, int]:
    """Load ``url``: (navigation start to the end of the load event, request to the last
    byte of the page), in milliseconds."""
    driver.get(url)
    timing: list[int] = WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(NAVIGATION))
    assert driver.find_elements(By.CSS_SELECTOR, 'table[data-table="tutors"] tr[data-row]')
    return timing[0], timing[1]


def browser_loads(app: Flask, query: str, loads: int) -> dict[str, Any]:
    """The page in Chromium ``loads`` times after logging in through the host's form."""
    with serving(app) as base, headless_chromium() as driver:
        page = f"{base}{UNIT}/dashboard?{query}"
        driver.get(f"{base}/login")  # the demo's form is filled in as the convenor
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, WAIT).until(lambda d: "/login" not in d.current_url)
        first = one_load(driver, page)  # nothing cached yet: the style sheet and script too
        timings = [one_load(driver, page) for _ in range(loads)]
    load = [t[0] for t in timings]
    return {
        "first_load_ms": first[0],
        "load_p50_ms": statistics.median(load),
        "load_max_ms": max(load),
        "server_p50_ms": statistics.median(t[1] for t in timings),
        "n": len(load),
    }


def run(
    database_url: str, sessions: int, activities: int, calls: int, loads: int
) -> dict[str, Any]:
    app = years_of_data(database_url, sessions, activities)
    query = term_query()
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    server = server_times(convenor(app), query, calls)
    browser = browser_loads(app, query, loads)
    print(
        f"  page p50 {server['page']['p50_ms']} ms (summary {server['summary']['p50_ms']},"
        f" timeline {server['timeline']['p50_ms']}, tasks {server['tasks']['p50_ms']},"
        f" sessions {server['sessions']['p50_ms']}); browser load p50"
        f" {browser['load_p50_ms']} ms, first {browser['first_load_ms']} ms"
        f" ({time.perf_counter() - started:.0f} s)"
    )
    return {
        "benchmark": "B8 dashboard",
        "sessions": sessions,
        "activities": activities * sessions,
        "range": "a 12-week term",
        "server": server,
        "browser": browser,
        # how busy the shared machine was: the 1-minute load average before and after
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv)
    if args.smoke:
        return run(smoke_url(DATABASE_URL), 2_000, 3, calls=3, loads=2)
    result = run(DATABASE_URL, 100_000, 10, calls=50, loads=15)
    save("b8_dashboard", result)
    return result


if __name__ == "__main__":
    main()
