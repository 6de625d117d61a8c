"""The dashboard pages, rendered by the server: the same numbers as the JSON endpoints, the
same roles, and the switch that turns them off. The browser tests are in
``test_dashboard_browser.py``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from demo import create_app
from demo.extensions import db, tutor_times
from demo.views import user_names
from tutor_times.web import html as markup

from ..conftest import Clock, built, login, play_scenario

UNIT = "/tutor-times/units/1"
ROW = re.compile(r'<tr data-row="([^"]+)"[^>]*>(.*?)</tr>', re.S)
CELL = re.compile(r'data-col="(\w+)" data-value="([^"]*)"')


@pytest.fixture
def seeded(backend: str, clock: Clock) -> Iterator[Flask]:
    with built(backend) as app:
        yield play_scenario(app, clock)


def table_rows(html: str, table: str) -> dict[str, dict[str, str]]:
    """The data cells of one of the page's tables, by its rows' key."""
    section = html.split(f'data-table="{table}"', 1)[1].split("</table>", 1)[0]
    return {key: dict(CELL.findall(body)) for key, body in ROW.findall(section)}


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    r = client.get(url)
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    return r.get_data(as_text=True)


@pytest.mark.parametrize(
    "args",
    ["tz=UTC", "tz=Australia/Melbourne", "from=2026-02-20&to=2026-03-02&tz=UTC"],
)
def test_the_tutor_table_equals_the_summary(seeded: Flask, args: str) -> None:
    client = login(seeded, "convenor")
    summary = client.get(f"{UNIT}/summary?{args}").get_json()
    rows = table_rows(page(client, f"{UNIT}/dashboard?{args}"), "tutors")
    assert len(summary["tutors"]) >= 2
    assert set(rows) == {str(t["marker_id"]) for t in summary["tutors"]}
    for tutor in summary["tutors"]:
        cells = rows[str(tutor["marker_id"])]
        for column in ("sessions", "minutes", "assessments", "minutes_per_assessment"):
            assert cells[column] == as_text(tutor[column]), (tutor, column)


def test_timeline_and_tasks_equal_their_json(seeded: Flask) -> None:
    client = login(seeded, "convenor")
    html = page(client, f"{UNIT}/dashboard?tz=UTC&bucket=day")
    timeline = client.get(f"{UNIT}/timeline?tz=UTC&bucket=day").get_json()
    days = table_rows(html, "timeline")
    assert list(days) == [str(i) for i in range(len(timeline["buckets"]))]
    for i, bucket in enumerate(timeline["buckets"]):
        assert days[str(i)]["minutes"] == str(bucket["minutes"])
        assert days[str(i)]["start"] == bucket["start"]
    tasks = client.get(f"{UNIT}/tasks?tz=UTC").get_json()["tasks"]
    rows = table_rows(html, "tasks")
    assert len(rows) == len(tasks) >= 2
    for i, task in enumerate(tasks):
        assert rows[str(i)]["estimated_minutes"] == str(task["estimated_minutes"])
        assert rows[str(i)]["assessments"] == str(task["assessments"])


def test_the_calendar_has_one_block_per_session(seeded: Flask) -> None:
    client = login(seeded, "convenor")
    html = page(client, f"{UNIT}/dashboard?tz=UTC")
    sessions = client.get(f"{UNIT}/sessions?tz=UTC&per_page=500").get_json()["sessions"]
    blocks = re.findall(r'class="tt-block[^"]*" data-session-id="(\d+)"', html)
    assert sorted(map(int, blocks)) == sorted(s["id"] for s in sessions)
    assert len(blocks) >= 4
    running = re.findall(r'class="tt-block tt-c\d tt-running" data-session-id="(\d+)"', html)
    assert running == [str(s["id"]) for s in sessions if s["active"]]
    # its table: each session's minutes and assessments as the JSON counts them from the
    # activities (the page reads a closed session's stored figures, and counts an open
    # one's), open and closed sessions both there
    rows = table_rows(html, "sessions")
    assert {s["end_time"] is None for s in sessions} == {True, False}
    assert any(s["assessments"] for s in sessions if s["end_time"] is None)
    for s in sessions:
        assert rows[str(s["id"])]["assessments"] == str(s["assessments"]), s
        assert rows[str(s["id"])]["minutes"] == str(s["duration_minutes"]), s


def test_tutors_are_named_by_the_hosts_name_loader(seeded: Flask) -> None:
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=UTC")
    assert "Tom Tutor" in html and "Tina Tutor" in html
    assert "#3" not in html.replace("&#34;", '"')  # no tutor shown by number


def test_a_hosts_names_are_text_wherever_the_page_shows_them(seeded: Flask) -> None:
    hostile = "<img src=x onerror=alert(1)>&\"'"
    tutor_times.name_loader(lambda ids: {i: f"{hostile}{i}" for i in ids})
    try:
        html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=UTC")
    finally:
        tutor_times.name_loader(user_names)
    assert "<img" not in html
    escaped = "&lt;img src=x onerror=alert(1)&gt;&amp;&#34;&#39;"
    tutors = html.split('data-table="tutors"', 1)[1].split("</table>", 1)[0]
    calendar = html.split('class="tt-calendar"', 1)[1].split("</svg>", 1)[0]
    sessions = html.split('data-table="sessions"', 1)[1].split("</table>", 1)[0]
    for part in (tutors, calendar, sessions):
        assert escaped in part


def test_a_tutor_sees_only_their_own_rows(seeded: Flask) -> None:
    html = page(login(seeded, "tutor1"), f"{UNIT}/dashboard?tz=UTC")
    assert "Tom Tutor" in html and "Tina Tutor" not in html
    assert set(table_rows(html, "tutors")) == {"3"}
    assert re.findall(r'data-marker="(\d+)"', html)
    assert set(re.findall(r'data-marker="(\d+)"', html)) == {"3"}


def test_my_dashboard_shows_my_own_time(seeded: Flask) -> None:
    client = login(seeded, "tutor2")
    html = page(client, "/tutor-times/me/dashboard?tz=UTC")
    mine = client.get(f"{UNIT}/summary?tz=UTC").get_json()["tutors"]
    rows = table_rows(html, "tutors")
    assert set(rows) == {"4"}
    assert rows["4"]["minutes"] == str(mine[0]["minutes"])


def test_roles(seeded: Flask) -> None:
    assert "only the unit" in page(login(seeded, "student1"), f"{UNIT}/dashboard", 403)
    assert "only the unit" in page(login(seeded, "tutor9"), f"{UNIT}/dashboard", 403)
    # a tutor naming another tutor is refused, not shown an empty page
    page(login(seeded, "tutor1"), f"{UNIT}/dashboard?marker_id=4", 403)
    anonymous = seeded.test_client()
    r = anonymous.get(f"{UNIT}/dashboard?tz=UTC")
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")
    manager: Any = seeded.login_manager  # type: ignore[attr-defined]
    view, manager.login_view = manager.login_view, None
    try:
        r = anonymous.get("/tutor-times/me/dashboard")
        assert r.status_code == 401
        assert r.mimetype == "text/html"
    finally:
        manager.login_view = view


def test_bad_input_is_a_400_page(seeded: Flask) -> None:
    client = login(seeded, "convenor")
    assert "tz" in page(client, f"{UNIT}/dashboard?tz=Mars/Olympus", 400)
    assert "to" in page(client, f"{UNIT}/dashboard?from=2026-03-02&to=2026-03-01", 400)


def test_the_pages_can_be_switched_off(backend: str, clock: Clock) -> None:
    with built(backend, TUTOR_TIMES_DASHBOARD=False) as app:
        client = login(app, "convenor")
        assert client.get(f"{UNIT}/dashboard").status_code == 404
        assert client.get("/tutor-times/me/dashboard").status_code == 404
        assert client.get(f"{UNIT}/summary").status_code == 200


def test_static_files_are_served_from_the_package(seeded: Flask) -> None:
    client = login(seeded, "convenor")
    html = page(client, f"{UNIT}/dashboard?tz=UTC")
    assets = re.findall(r'(?:src|href)="(/tutor-times/static/[^"?]+)', html)
    assert {a.rsplit(".", 1)[1] for a in assets} == {"css", "js"}
    for asset in assets:
        assert client.get(asset).status_code == 200
    assert "http://" not in html and "https://" not in html


@pytest.mark.slow
def test_the_demo_history_fills_the_dashboard(tmp_path: Path) -> None:
    """``make run`` seeds weeks of marking through the tracking path: several tutors, the
    dashboard full, someone still marking; seeding again adds nothing."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'demo.sqlite'}")
    with app.app_context():
        db.create_all()
    runner = app.test_cli_runner()
    try:
        first = runner.invoke(args=["seed-demo", "--history"])
        assert first.exit_code == 0, first.output
        assert "marking activities of the last 3 weeks" in first.output
        again = runner.invoke(args=["seed-demo", "--history"])
        assert again.exit_code == 0 and "marking activities" not in again.output
        client = login(app, "convenor")
        summary = client.get(f"{UNIT}/summary?from=2000-01-01").get_json()
        assert len(summary["tutors"]) == 4
        assert summary["totals"]["sessions"] >= 30
        assert client.get(f"{UNIT}/active").get_json()["sessions"]
        html = page(client, f"{UNIT}/dashboard?tz=Australia/Melbourne")
        assert len(re.findall(r'class="tt-block', html)) >= 5
    finally:
        with app.app_context():
            tutor_times.dispose()
            db.engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        "from=0001-01-01&to=0001-01-07&tz=Pacific/Kiritimati",
        "from=0001-01-01&to=0001-01-07&tz=America/Adak",
        "from=9999-12-25&to=9999-12-31&tz=Pacific/Kiritimati",
        "from=9999-12-25&to=9999-12-31&tz=America/Adak",
        "from=0001-01-01&to=9999-12-31&tz=UTC",
        "to=0001-01-01&tz=UTC",
        "from=2026-03-02T09:10:00&to=2026-03-02T09:20:00&tz=UTC",
    ],
)
def test_the_ends_of_the_calendar_are_a_page_or_a_400(seeded: Flask, args: str) -> None:
    r = login(seeded, "convenor").get(f"{UNIT}/dashboard?{args}")
    assert r.status_code in (200, 400), r.get_data(as_text=True)[:300]
    assert r.mimetype == "text/html"


WHAT_IF_RANGE = "from=2026-02-27&to=2026-03-04&tz=UTC"
FOOT = re.compile(r'data-foot="(\w+)">([^<]*)<')


def minutes_by_tutor(summary: dict[str, Any]) -> dict[str, str]:
    return {str(t["marker_id"]): str(t["minutes"]) for t in summary["tutors"]}


@pytest.mark.parametrize("seconds", [60, 300])
def test_the_what_if_columns_equal_the_summary_under_that_timeout(
    seeded: Flask, seconds: int
) -> None:
    client = login(seeded, "convenor")
    stored = client.get(f"{UNIT}/summary?{WHAT_IF_RANGE}").get_json()
    what_if = client.get(f"{UNIT}/summary?{WHAT_IF_RANGE}&timeout={seconds}").get_json()
    html = page(client, f"{UNIT}/dashboard?{WHAT_IF_RANGE}&timeout={seconds}")
    rows = table_rows(html, "tutors")
    configured, changed = minutes_by_tutor(stored), minutes_by_tutor(what_if)
    assert set(rows) == set(configured) | set(changed) and len(rows) >= 2
    for marker, cells in rows.items():
        assert cells["configured_minutes"] == configured.get(marker, "0")
        assert cells["whatif_minutes"] == changed.get(marker, "0")
    feet = dict(FOOT.findall(html.split('data-table="tutors"', 1)[1].split("</table>")[0]))
    assert feet == {
        "configured_minutes": str(stored["totals"]["minutes"]),
        "whatif_minutes": str(what_if["totals"]["minutes"]),
    }
    assert what_if["totals"]["minutes"] != stored["totals"]["minutes"]
    assert f'<option value="{seconds}" selected>' in html


@pytest.mark.parametrize("args", ["", "&timeout="])
def test_the_what_if_columns_are_off_by_default(seeded: Flask, args: str) -> None:
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?{WHAT_IF_RANGE}{args}")
    assert 'name="timeout"' in html and '<option value="" selected>' in html
    assert "whatif_minutes" not in html and "configured_minutes" not in html


def test_a_tutor_sees_only_their_own_what_if_minutes(seeded: Flask) -> None:
    client = login(seeded, "tutor1")
    html = page(client, f"{UNIT}/dashboard?{WHAT_IF_RANGE}&timeout=60")
    mine = client.get(f"{UNIT}/summary?{WHAT_IF_RANGE}&timeout=60").get_json()
    assert {k: v["whatif_minutes"] for k, v in table_rows(html, "tutors").items()} == (
        minutes_by_tutor(mine)
    )
    assert set(minutes_by_tutor(mine)) == {"3"}


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "abc", "86401"])
def test_a_bad_what_if_timeout_is_a_400_page(seeded: Flask, value: str) -> None:
    assert "timeout" in page(login(seeded, "convenor"), f"{UNIT}/dashboard?timeout={value}", 400)


def test_my_dashboard_has_no_what_if(seeded: Flask) -> None:
    client = login(seeded, "tutor2")
    assert 'name="timeout"' not in page(client, "/tutor-times/me/dashboard?tz=UTC")
    page(client, "/tutor-times/me/dashboard?timeout=60", 400)


def test_a_what_if_at_the_start_of_the_calendar_is_a_400_page(seeded: Flask) -> None:
    """Refused by the range's bounds, which leave a what-if room to read a day before."""
    client = login(seeded, "convenor")
    query = "from=0001-01-01&to=0001-01-07&tz=Pacific/Kiritimati&timeout=86400"
    assert "from: must lie between" in page(client, f"{UNIT}/dashboard?{query}", 400)
    query = "from=0002-01-01&to=0002-01-07&tz=Pacific/Kiritimati&timeout=86400"
    page(client, f"{UNIT}/dashboard?{query}")


@pytest.mark.parametrize("args", ["tz=UTC", "tz=UTC&timeout=60"])
def test_the_pages_reports_share_one_connection(seeded: Flask, args: str) -> None:
    """Five or six reports, one checkout (and ping) of the reports' pool for them all (and
    on PostgreSQL one more, for the reports read beside the others); the host's own session
    (the user, the role, the names) takes one of the host's pool."""
    client = login(seeded, "convenor")
    checkouts: dict[str, int] = {"host": 0, "reports": 0}

    def counter(name: str) -> Callable[..., None]:
        def count(*_: object) -> None:
            checkouts[name] += 1

        return count

    with seeded.app_context():
        engines = {"host": db.engine, "reports": tutor_times.state.reports_engine(db.engine)}
    listeners = {name: counter(name) for name in engines}
    for name, engine in engines.items():
        sa.event.listen(engine, "checkout", listeners[name])
    try:
        page(client, f"{UNIT}/dashboard?{args}")
    finally:
        for name, engine in engines.items():
            sa.event.remove(engine, "checkout", listeners[name])
    if engines["host"] is engines["reports"]:  # in-memory SQLite: one engine for all
        assert checkouts["host"] == checkouts["reports"] == 2
    else:
        beside = 1 if seeded.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql") else 0
        assert checkouts == {"host": 1, "reports": 1 + beside}


def test_a_tutor_only_in_the_what_if_has_the_rows_other_columns(
    seeded: Flask, clock: Clock
) -> None:
    """tutor2's session starts before the range under the configured timeout, and inside it
    under 60 s: their row exists only because of the what-if, and still shows the split and
    the students (0 minutes of each), not blank cells."""
    with seeded.app_context():
        for t in ("2026-02-28T23:55:00+00:00", "2026-03-01T00:05:00+00:00"):
            clock.set(datetime.fromisoformat(t))
            tutor_times.record_activity("inbox", marker_id=4, unit_id=1, ip_address="10.0.0.8")
    tutor_times.class_times_loader(lambda unit, start, end: [])
    tutor_times.student_count_loader(lambda unit, marker: 5)
    try:
        client = login(seeded, "convenor")
        args = "from=2026-03-01&to=2026-03-01&tz=UTC"
        assert client.get(f"{UNIT}/summary?{args}").get_json()["tutors"] == []
        rows = table_rows(page(client, f"{UNIT}/dashboard?{args}&timeout=60"), "tutors")
    finally:
        tutor_times.forget_workload_loaders()
    assert rows["4"]["whatif_minutes"] == "1" and rows["4"]["configured_minutes"] == "0"
    assert (rows["4"]["during_class_minutes"], rows["4"]["outside_class_minutes"]) == ("0", "0")
    assert (rows["4"]["students"], rows["4"]["minutes_per_student"]) == ("5", "0.0")


def test_the_calendars_day_and_clock_are_strftimes() -> None:
    start = datetime(2026, 3, 2, 9, 5)
    for days in range(400):
        t = start + timedelta(days=days, minutes=days * 37)
        assert markup.clock(t) == t.strftime("%a %H:%M")
        assert markup.day_clock(t) == t.strftime("%a %d %b %H:%M")
        assert markup.day_label(t.date()) == f"{t:%a} {t.day} {t:%b}"


def test_the_title_and_heading_name_the_unit_by_the_hosts_unit_name_loader(seeded: Flask) -> None:
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=UTC")
    assert "<title>COS10001 Introduction to Programming · Marking times</title>" in html
    assert "<h1>COS10001 Introduction to Programming</h1>" in html
    mine = page(login(seeded, "tutor1"), "/tutor-times/me/dashboard?tz=UTC&unit_id=1")
    assert "<h1>My marking in COS10001 Introduction to Programming</h1>" in mine


def test_without_a_unit_name_loader_a_unit_is_unit_n(
    seeded: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tutor_times, "_unit_name_loader", None)
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=UTC")
    assert "<title>Unit 1 · Marking times</title>" in html and "<h1>Unit 1</h1>" in html


BLOCK = re.compile(
    r'<rect class="tt-block tt-c(\d)[^"]*" data-session-id="\d+" data-marker="(\d+)"[^>]*'
    r'aria-label="([^"]+)"><title>([^<]+)</title>'
)
LESSON = re.compile(r'<rect class="tt-class"( data-marker="\d+")?[^>]*aria-label="([^"]+)"')


def test_each_tutor_has_a_colour_of_their_own_named_in_the_legend(seeded: Flask) -> None:
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=UTC")
    blocks = BLOCK.findall(html)
    assert len(blocks) >= 4
    colour_of = {marker: colour for colour, marker, _, _ in blocks}
    assert len(colour_of) == 2 and len(set(colour_of.values())) == 2
    assert all(colour_of[marker] == colour for colour, marker, _, _ in blocks)
    # every block is named, the same way on hover and to a screen reader
    with seeded.app_context():
        names = user_names([int(m) for m in colour_of])
    for _, marker, label, title in blocks:
        assert label == title and label.startswith(f"{names[int(marker)]}: ")
    legend = html.split('<ul class="tt-legend"', 1)[1].split("</ul>", 1)[0]
    for marker, colour in colour_of.items():
        assert f'<li data-marker="{marker}"><span class="tt-swatch tt-c{colour}"' in legend
        assert names[int(marker)] in legend


@pytest.fixture
def with_classes(backend: str, clock: Clock) -> Iterator[Flask]:
    """The scenario with the demo's timetable as the host's class_times_loader."""
    with built(backend, DEMO_TIMETABLE=True) as app:
        yield play_scenario(app, clock)


def test_the_hosts_classes_are_shaded_behind_the_sessions(with_classes: Flask) -> None:
    """The demo's timetable (demo/timetable.py) in the calendar's week: each class named,
    drawn before (behind) every block; a tutor sees their own classes and the shared ones."""
    seeded = with_classes
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=Australia/Melbourne")
    lessons = LESSON.findall(html)
    labels = [label for _, label in lessons]
    assert "Class of Tom Tutor: Mon 10:30–12:30" in labels
    assert "Class of Tina Tutor: Tue 18:30–20:30" in labels
    assert "Class of every tutor: Thu 09:00–10:00" in labels
    assert html.rindex('class="tt-class"') < html.index('class="tt-block')
    assert 'data-legend="class"' in html
    own = page(login(seeded, "tutor1"), f"{UNIT}/dashboard?tz=Australia/Melbourne")
    own_labels = [label for _, label in LESSON.findall(own)]
    assert "Class of Tom Tutor: Mon 10:30–12:30" in own_labels
    assert "Class of every tutor: Thu 09:00–10:00" in own_labels
    assert not any("Tina Tutor" in label for label in own_labels)


def test_without_class_times_nothing_is_shaded(seeded: Flask) -> None:
    html = page(login(seeded, "convenor"), f"{UNIT}/dashboard?tz=UTC")
    assert 'class="tt-class"' not in html and 'data-legend="class"' not in html
    assert BLOCK.findall(html)


def test_the_demos_front_page_shows_the_way_in_and_its_favicon_is_an_image(
    seeded: Flask,
) -> None:
    client = seeded.test_client()
    html = page(client, "/")
    for username in ("convenor", "tutor1", "tutor2", "admin", "student1"):
        assert f"<code>{username}</code>" in html
    for href in (
        "/login?next=/tutor-times/units/1/dashboard",
        "/tutor-times/units/1/dashboard",
        "/tutor-times/units/2/dashboard",
        "/tutor-times/me/dashboard",
        "/tutor-times/units/1/summary",
        "/tutor-times/me/sessions",
        "/tutor-times/openapi.json",
    ):
        assert f'href="{href}"' in html.replace("%2F", "/"), href
    assert ">COS10001 Introduction to Programming</a>" in html
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.mimetype == "image/png"
    assert icon.data.startswith(b"\x89PNG\r\n\x1a\n")
