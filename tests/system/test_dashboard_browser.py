"""The dashboard in a real headless Chromium, against a real threaded server on loopback,
on both backends: its numbers equal the JSON endpoints', its pickers and sorting work, a
tutor sees only themself, the live panel updates itself, the console stays clean, and the
page fits a 390 px phone. Screenshots of what the browser saw go to TUTOR_TIMES_SCREENSHOTS."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from demo.extensions import db, tutor_times

from ..browser import (
    BROWSER_ZONE,
    DESKTOP,
    PHONE,
    ROOT,
    chromium,
    console_errors,
    screenshot,
    screenshots_folder,
    viewport,
)
from ..conftest import Clock, built, login, make_app, play_scenario, serving

pytestmark = [pytest.mark.browser, pytest.mark.system]

UNIT = "/tutor-times/units/1"
WAIT = 20  # seconds: the live panel asks every 5 s


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


@dataclass
class Site:
    app: Flask
    base: str
    driver: webdriver.Chrome

    def login(self, username: str, path: str) -> None:
        """Log in through the host's form, as a person would, landing on ``path``."""
        d = self.driver
        d.delete_all_cookies()
        d.get(f"{self.base}{path}")  # anonymous: the host's login page, coming back after
        WebDriverWait(d, WAIT).until(lambda d: "/login" in d.current_url)
        user = d.find_element(By.NAME, "username")
        user.clear()
        user.send_keys(username)
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(d, WAIT).until(lambda d: "tz=" in d.current_url)

    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.driver.current_url).query).items()}

    def json(self, username: str, path: str, **args: str) -> Any:
        r = login(self.app, username).get(path, query_string=args)
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_json()

    def rows(self, table: str) -> dict[str, dict[str, str]]:
        """A table's rows as the browser shows them (after any sorting), by row key."""
        # pairs, not an object: a JS object lists numeric keys in number order, not the rows'
        found: list[list[Any]] = self.driver.execute_script(
            """
            const out = [];
            for (const tr of document.querySelectorAll(`table[data-table="${arguments[0]}"] tbody tr[data-row]`)) {
              const cells = {};
              for (const td of tr.querySelectorAll("td[data-col]")) cells[td.dataset.col] = td.dataset.value;
              out.push([tr.dataset.row, cells]);
            }
            return out;""",
            table,
        )
        return {key: cells for key, cells in found}


@pytest.fixture
def site(backend: str, clock: Clock, browser: webdriver.Chrome) -> Iterator[Site]:
    with built(backend) as app, serving(app) as port:
        play_scenario(app, clock)
        viewport(browser, *DESKTOP, mobile=False)
        console_errors(browser)  # forget what earlier tests left
        yield Site(app, f"http://127.0.0.1:{port}", browser)
        assert console_errors(browser) == []


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def assert_tutors_equal_summary(site: Site, summary: dict[str, Any]) -> None:
    rows = site.rows("tutors")
    assert set(rows) == {str(t["marker_id"]) for t in summary["tutors"]}
    for tutor in summary["tutors"]:
        for column in ("sessions", "minutes", "assessments", "minutes_per_assessment"):
            assert rows[str(tutor["marker_id"])][column] == as_text(tutor[column])


def test_numbers_and_calendar_equal_the_json_in_the_browsers_zone(site: Site, backend: str) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    assert site.query()["tz"] == BROWSER_ZONE  # the browser's zone, kept in the URL
    summary = site.json("convenor", f"{UNIT}/summary", tz=BROWSER_ZONE)
    assert len(summary["tutors"]) == 2
    assert_tutors_equal_summary(site, summary)
    totals = site.driver.find_element(By.CSS_SELECTOR, '[data-total="minutes"]').text
    assert totals == str(summary["totals"]["minutes"])
    sessions = site.json("convenor", f"{UNIT}/sessions", tz=BROWSER_ZONE, per_page="500")
    blocks = site.driver.find_elements(By.CSS_SELECTOR, "svg.tt-calendar rect.tt-block")
    assert sorted(int(b.get_attribute("data-session-id") or 0) for b in blocks) == sorted(
        s["id"] for s in sessions["sessions"]
    )
    running = site.driver.find_elements(By.CSS_SELECTOR, "rect.tt-block.tt-running")
    assert [r.get_attribute("data-session-id") for r in running] == [
        str(s["id"]) for s in sessions["sessions"] if s["active"]
    ]
    title = blocks[0].find_element(By.TAG_NAME, "title").get_attribute("textContent") or ""
    assert " min, " in title and "assessment" in title
    screenshot(site.driver, f"dashboard-desktop-{backend}", DESKTOP[0], mobile=False)


def test_the_pickers_change_the_data(site: Site) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    before = site.rows("tutors")
    d = site.driver
    # date inputs type in the browser's locale; set their values as the picker would
    d.execute_script(
        """const f = document.querySelector(".tt-pickers");
        f.elements.from.value = "2026-03-02"; f.elements.to.value = "2026-03-02";
        f.elements.tz.value = "UTC"; f.elements.bucket.value = "week";""",
    )
    d.find_element(By.CSS_SELECTOR, ".tt-pickers button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: "bucket=week" in d.current_url)
    assert site.query() == {"from": "2026-03-02", "to": "2026-03-02", "tz": "UTC", "bucket": "week"}
    summary = site.json("convenor", f"{UNIT}/summary", **{"from": "2026-03-02", "to": "2026-03-02"})
    assert_tutors_equal_summary(site, summary)
    assert site.rows("tutors") != before
    assert d.find_element(By.CSS_SELECTOR, "h2").text  # still a page, not an error
    assert len(site.rows("timeline")) == 1  # one week


def test_a_table_sorts_by_the_clicked_column(site: Site) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    button = site.driver.find_element(
        By.CSS_SELECTOR, 'table[data-table="tutors"] button[data-sort="minutes"]'
    )
    button.click()
    ascending = [int(r["minutes"]) for r in site.rows("tutors").values()]
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    button.click()
    descending = [int(r["minutes"]) for r in site.rows("tutors").values()]
    assert descending == sorted(ascending, reverse=True)


def test_a_tutor_sees_no_other_tutor(site: Site) -> None:
    site.login("tutor1", f"{UNIT}/dashboard")
    markers = {
        e.get_attribute("data-marker")
        for e in site.driver.find_elements(By.CSS_SELECTOR, "[data-marker]")
    }
    assert markers == {"3"}
    text = site.driver.find_element(By.TAG_NAME, "body").text
    assert "Tom Tutor" in text and "Tina Tutor" not in text


def test_the_live_panel_shows_a_session_started_after_the_page_loaded(site: Site) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    d = site.driver
    live = "#tt-live li[data-marker]"
    assert [e.get_attribute("data-marker") for e in d.find_elements(By.CSS_SELECTOR, live)] == ["4"]
    d.execute_script("window.notReloaded = true")
    with site.app.app_context():
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.9")
    WebDriverWait(d, WAIT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '#tt-live li[data-marker="3"]')
    )
    assert d.execute_script("return window.notReloaded") is True
    assert "Updated" in d.find_element(By.CSS_SELECTOR, "[data-live-status]").text


def test_the_page_fits_a_phone(site: Site, backend: str) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    d = site.driver
    viewport(d, *PHONE, mobile=True)
    d.refresh()
    WebDriverWait(d, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".tt-totals"))
    overflow = d.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    table = d.find_element(By.CSS_SELECTOR, 'table[data-table="tutors"]')
    assert table.is_displayed() and table.size["width"] > 0
    screenshot(d, f"dashboard-phone-{backend}", PHONE[0], mobile=True)


def test_the_what_if_picker_adds_the_column_pair_of_the_summary_under_that_timeout(
    site: Site, backend: str
) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    d = site.driver
    d.execute_script(
        """const f = document.querySelector(".tt-pickers");
        f.elements.from.value = "2026-02-27"; f.elements.to.value = "2026-03-04";
        f.elements.tz.value = "UTC";""",
    )
    Select(d.find_element(By.NAME, "timeout")).select_by_value("60")
    d.find_element(By.CSS_SELECTOR, ".tt-pickers button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: "timeout=60" in d.current_url)
    assert site.query()["timeout"] == "60"
    args = {"from": "2026-02-27", "to": "2026-03-04", "tz": "UTC"}
    stored = site.json("convenor", f"{UNIT}/summary", **args)
    what_if = site.json("convenor", f"{UNIT}/summary", timeout="60", **args)
    configured = {str(t["marker_id"]): str(t["minutes"]) for t in stored["tutors"]}
    changed = {str(t["marker_id"]): str(t["minutes"]) for t in what_if["tutors"]}
    rows = site.rows("tutors")
    assert set(rows) == set(configured) | set(changed) and len(rows) >= 2
    assert {k: r["configured_minutes"] for k, r in rows.items()} == {
        k: configured.get(k, "0") for k in rows
    }
    assert {k: r["whatif_minutes"] for k, r in rows.items()} == {
        k: changed.get(k, "0") for k in rows
    }
    assert changed != configured
    feet = {
        e.get_attribute("data-foot"): e.text
        for e in d.find_elements(By.CSS_SELECTOR, 'table[data-table="tutors"] tfoot [data-foot]')
    }
    assert feet == {
        "configured_minutes": str(stored["totals"]["minutes"]),
        "whatif_minutes": str(what_if["totals"]["minutes"]),
    }
    screenshot(d, f"dashboard-what-if-{backend}", DESKTOP[0], mobile=False)
    Select(d.find_element(By.NAME, "timeout")).select_by_value("")  # off again
    d.find_element(By.CSS_SELECTOR, ".tt-pickers button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: "timeout=60" not in d.current_url)
    assert "timeout" not in site.query()
    assert not d.find_elements(By.CSS_SELECTOR, '[data-col="whatif_minutes"]')


@pytest.fixture
def timetable() -> Iterator[None]:
    """A host timetable for the scenario: tutor1's class across their two-IP block, and a
    class of every tutor across midnight; and student counts."""
    classes = [
        (
            3,
            datetime(2026, 3, 2, 9, 10, tzinfo=timezone.utc),
            datetime(2026, 3, 2, 9, 40, tzinfo=timezone.utc),
        ),
        (
            None,
            datetime(2026, 3, 3, 0, 0, tzinfo=timezone.utc),
            datetime(2026, 3, 3, 1, 0, tzinfo=timezone.utc),
        ),
    ]
    tutor_times.class_times_loader(lambda unit, start, end: classes if unit == 1 else [])
    tutor_times.student_count_loader(lambda unit, marker: {3: 6, 4: 2, None: 8}.get(marker))
    yield
    tutor_times.forget_workload_loaders()


def test_the_class_time_split_equals_the_json(site: Site, timetable: None, backend: str) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    summary = site.json("convenor", f"{UNIT}/summary", tz=BROWSER_ZONE)
    rows = site.rows("tutors")
    columns = ("during_class_minutes", "outside_class_minutes", "students", "minutes_per_student")
    for tutor in summary["tutors"]:
        for column in columns:
            assert rows[str(tutor["marker_id"])][column] == as_text(tutor[column])
    assert rows["3"]["during_class_minutes"] == "29"  # 19 of the two-IP block, 10 at midnight
    d = site.driver
    total = d.find_element(By.CSS_SELECTOR, '[data-total="during_class_minutes"]').text
    assert total == str(summary["totals"]["during_class_minutes"])
    timeline = site.json("convenor", f"{UNIT}/timeline", tz=BROWSER_ZONE)["buckets"]
    shown = site.rows("timeline")
    for i, bucket in enumerate(timeline):
        assert shown[str(i)]["during_class_minutes"] == str(bucket["during_class_minutes"])
        assert shown[str(i)]["outside_class_minutes"] == str(bucket["outside_class_minutes"])
    bars = d.find_elements(By.CSS_SELECTOR, "svg.tt-bars rect.tt-bar-class")
    assert len(bars) == sum(1 for b in timeline if b["during_class_minutes"])
    titles = [
        t.get_attribute("textContent") or ""
        for t in d.find_elements(By.CSS_SELECTOR, "svg.tt-calendar rect.tt-block title")
    ]
    assert any("during class" in t for t in titles)
    button = d.find_element(
        By.CSS_SELECTOR, 'table[data-table="tutors"] button[data-sort="during_class_minutes"]'
    )
    button.click()
    ascending = [int(r["during_class_minutes"]) for r in site.rows("tutors").values()]
    assert ascending == sorted(ascending)
    screenshot(d, f"dashboard-class-times-{backend}", DESKTOP[0], mobile=False)


def test_without_class_times_the_dashboard_has_no_split(site: Site) -> None:
    site.login("convenor", f"{UNIT}/dashboard")
    d = site.driver
    assert not d.find_elements(By.CSS_SELECTOR, '[data-sort="during_class_minutes"]')
    assert not d.find_elements(By.CSS_SELECTOR, "rect.tt-bar-class")


# -- the documentation's pictures ------------------------------------------------------------


def test_the_documentations_screenshots(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """The demo as ``make run`` fills it (three weeks of marking by four tutors), seen by the
    convenor on a desktop and on a phone. The pictures go to TUTOR_TIMES_SCREENSHOTS as
    ``docs-dashboard-*.png``; with TUTOR_TIMES_DOCS_SCREENSHOTS (``make screenshots``: the
    documentation's ``docs/_static``) also there, as the pages show them."""
    app = make_app("sqlite", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'demo.sqlite'}")
    with app.app_context():
        db.create_all()
    runner = app.test_cli_runner()
    seeded = runner.invoke(args=["seed-demo", "--history"])
    assert seeded.exit_code == 0, seeded.output
    try:
        with serving(app) as port:
            site = Site(app, f"http://127.0.0.1:{port}", browser)
            viewport(browser, *DESKTOP, mobile=False)
            console_errors(browser)
            site.login("convenor", f"{UNIT}/dashboard")
            summary = site.json("convenor", f"{UNIT}/summary", tz=BROWSER_ZONE)
            assert len(summary["tutors"]) >= 3, "the demo's history shows several tutors"
            assert_tutors_equal_summary(site, summary)
            # the page's top, not the whole of it: the totals, the live panel, the tutors and
            # the calendar on a desktop; the totals and the live panel on a phone
            viewport(browser, DESKTOP[0], 1500, mobile=False)
            pictures = {"desktop": screenshots_folder() / "docs-dashboard-desktop.png"}
            assert browser.save_screenshot(str(pictures["desktop"]))
            viewport(browser, *PHONE, mobile=True)
            browser.refresh()
            WebDriverWait(browser, WAIT).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".tt-totals")
            )
            pictures["phone"] = screenshots_folder() / "docs-dashboard-phone.png"
            assert browser.save_screenshot(str(pictures["phone"]))
            assert console_errors(browser) == []
    finally:
        with app.app_context():
            tutor_times.stop_sweeper()
            tutor_times.dispose()
            db.engine.dispose()
    for path in pictures.values():
        assert path.stat().st_size > 10_000, path  # a page, not a blank frame
    target = os.environ.get("TUTOR_TIMES_DOCS_SCREENSHOTS")
    if target:
        folder = Path(target) if Path(target).is_absolute() else ROOT / target
        for kind, path in pictures.items():
            shutil.copyfile(path, folder / f"dashboard-{kind}.png")
