"""A newcomer's first visit, in a real headless Chromium against the demo on loopback: the
front page says who to log in as and links the dashboards, the JSON endpoints and
openapi.json; its links lead through the login form to the unit's dashboard, named after
the unit; the calendar colours each tutor's sessions, names them in a legend and on every
block, shades the host's classes behind them, and the per-tutor table fits a 1280-pixel
window. Screenshots at desktop and phone widths go to TUTOR_TIMES_SCREENSHOTS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ..browser import DESKTOP, PHONE, chromium, console_errors, screenshot, viewport
from ..conftest import Clock, built, play_scenario, serving

pytestmark = [pytest.mark.browser, pytest.mark.system]

WAIT = 20
UNIT_NAME = "COS10001 Introduction to Programming"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def site(clock: Clock, browser: webdriver.Chrome) -> Iterator[tuple[Flask, str]]:
    """The demo with its timetable, on the report tests' scenario, served on loopback."""
    with built("sqlite", DEMO_TIMETABLE=True) as app, serving(app) as port:
        play_scenario(app, clock)
        browser.delete_all_cookies()
        viewport(browser, *DESKTOP, mobile=False)
        console_errors(browser)
        yield app, f"http://127.0.0.1:{port}"
        assert console_errors(browser) == []


def luminance(rgb: str) -> float:
    """The relative luminance (WCAG 2) of a computed ``rgb(r, g, b)``."""
    channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


CALENDAR = """
const fill = (el) => getComputedStyle(el).fill;
const blocks = [...document.querySelectorAll("svg.tt-calendar rect.tt-block")];
const classes = [...document.querySelectorAll("svg.tt-calendar rect.tt-class")];
return {
  blocks: blocks.map((b) => ({
    marker: b.dataset.marker, fill: fill(b), label: b.getAttribute("aria-label"),
    title: b.querySelector("title").textContent,
    behind_every_class: classes.every(
      (c) => c.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING),
  })),
  classes: classes.map((c) => ({fill: fill(c), label: c.getAttribute("aria-label")})),
  legend: [...document.querySelectorAll(".tt-legend li[data-marker]")].map((li) => ({
    marker: li.dataset.marker, text: li.textContent.trim(),
    swatch: getComputedStyle(li.querySelector(".tt-swatch")).backgroundColor,
  })),
  class_in_legend: !!document.querySelector('.tt-legend li[data-legend="class"]'),
  label_colour: (() => {
    const label = document.querySelector("svg.tt-calendar text.tt-label");
    return label ? getComputedStyle(label).fill : "rgb(255, 255, 255)";
  })(),
};
"""


def test_the_front_page_leads_to_the_units_dashboard_and_its_calendar(
    site: tuple[Flask, str], browser: webdriver.Chrome
) -> None:
    _, base = site
    d = browser
    d.get(f"{base}/")
    assert d.title == "Demo LMS · tutor_times"
    body = d.find_element(By.TAG_NAME, "body").text
    for username in ("convenor", "tutor1", "tutor2", "admin", "student1"):
        assert username in body
    assert "password" in body
    hrefs = [a.get_attribute("href") or "" for a in d.find_elements(By.CSS_SELECTOR, "a")]
    assert f"{base}/tutor-times/openapi.json" in hrefs
    assert f"{base}/tutor-times/me/dashboard" in hrefs
    assert f"{base}/tutor-times/units/1/summary" in hrefs
    # the favicon the page names is an image, not a 404
    icon: dict[str, Any] = d.execute_async_script(
        """const done = arguments[0];
        fetch(document.querySelector("link[rel=icon]").href)
          .then((r) => done({status: r.status, type: r.headers.get("content-type")}));"""
    )
    assert icon == {"status": 200, "type": "image/png"}
    screenshot(d, "demo-home-desktop", DESKTOP[0], mobile=False)

    # the unit's dashboard, through the login form (its user: the convenor)
    units = d.find_elements(By.CSS_SELECTOR, 'a[data-link="unit-dashboard"]')
    assert [a.text for a in units] == [UNIT_NAME, "COS20007 Object Oriented Programming"]
    units[0].click()
    WebDriverWait(d, WAIT).until(lambda d: "/login" in d.current_url)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: "/units/1/dashboard" in d.current_url)
    WebDriverWait(d, WAIT).until(lambda d: "tz=" in d.current_url)
    assert d.title == f"{UNIT_NAME} · Marking times"
    assert d.find_element(By.TAG_NAME, "h1").text == UNIT_NAME

    seen: dict[str, Any] = d.execute_script(CALENDAR)
    blocks = seen["blocks"]
    assert len(blocks) >= 4
    # a colour per tutor, the same on every block of theirs and in the legend
    fills = {b["marker"]: b["fill"] for b in blocks}
    assert len(fills) == 2 and len(set(fills.values())) == 2
    assert all(fills[b["marker"]] == b["fill"] for b in blocks)
    assert {item["marker"]: item["swatch"] for item in seen["legend"]} == fills
    assert {item["text"] for item in seen["legend"]} == {"Tom Tutor", "Tina Tutor"}
    # readable: the labels' white on every tutor's colour, and each colour on the page
    for fill in fills.values():
        assert contrast(fill, seen["label_colour"]) >= 4.5, fill
        assert contrast(fill, "rgb(255, 255, 255)") >= 4.5, fill
    # every block named, on hover and for a screen reader
    for b in blocks:
        assert b["label"] == b["title"]
        assert b["label"].split(":")[0] in {"Tom Tutor", "Tina Tutor"}
        assert " min" in b["label"] and "assessment" in b["label"]
        assert b["behind_every_class"]
    # the host's classes, shaded behind the sessions and named too
    assert seen["class_in_legend"]
    assert len(seen["classes"]) >= 3
    assert all(c["label"].startswith("Class of ") for c in seen["classes"])
    for c in seen["classes"]:
        for fill in fills.values():
            assert contrast(fill, c["fill"]) >= 3, (fill, c["fill"])

    screenshot(d, "demo-dashboard-desktop", DESKTOP[0], mobile=False)
    viewport(d, *PHONE, mobile=True)
    screenshot(d, "demo-dashboard-phone", PHONE[0], mobile=True)
    overflow = d.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0

    # one's own page, from the front page's other link
    viewport(d, *DESKTOP, mobile=False)
    d.get(f"{base}/")
    d.find_element(By.CSS_SELECTOR, 'a[data-link="my-dashboard"]').click()
    WebDriverWait(d, WAIT).until(lambda d: "/me/dashboard" in d.current_url)
    assert d.find_element(By.TAG_NAME, "h1").text == "My marking"


def test_the_per_tutor_table_fits_a_1280_pixel_window(
    site: tuple[Flask, str], browser: webdriver.Chrome
) -> None:
    """Every column at once (the class split, students, the what-if pair): no horizontal
    scroll bar on the table or the page."""
    _, base = site
    d = browser
    d.get(f"{base}/login?next=/tutor-times/units/1/dashboard%3Ftimeout%3D300")
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: "tz=" in d.current_url)
    columns = d.find_elements(By.CSS_SELECTOR, 'table[data-table="tutors"] thead th')
    assert len(columns) == 12  # the six, during/outside class, students, the what-if pair
    viewport(d, *DESKTOP, mobile=False)
    table, page = d.execute_script(
        """const box = document.querySelector('table[data-table="tutors"]').parentElement;
        const root = document.documentElement;
        return [box.scrollWidth - box.clientWidth, root.scrollWidth - root.clientWidth];"""
    )
    assert (table, page) == (0, 0)
    screenshot(d, "demo-dashboard-what-if-desktop", DESKTOP[0], mobile=False)
