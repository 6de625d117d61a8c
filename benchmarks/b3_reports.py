"""B3 reports: the report endpoints of one unit over years of data.

1M activities in 100k sessions of 200 tutors over two years, in four units; the convenor of
unit 1 asks for its summary, tasks, timeline and a sessions page, through the Flask test
client (JSON rendering and the role check included, HTTP aside), over three ranges. Every
SQL statement of one request per report is then run again under EXPLAIN ANALYZE.

Then the same requests with the host's class_times_loader answering a full term's timetable
of unit 1 (two two-hour tutorials a week for each of the 200 tutors and a weekly lecture of
every tutor, 12 weeks, at Melbourne wall-clock times), alternating request by request with
the requests without it, so both see the same load: the split (R12) against no split.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from benchmarks.common import (
    DATABASE_URL,
    RESULTS,
    arguments,
    bench_app,
    ensure_database,
    fill_closed_sessions,
    fresh_schema,
    percentiles,
    reports_engine_of,
    save,
    smoke_url,
    step,
    time_calls,
)

REPORTS = {
    "summary": "/tutor-times/units/1/summary",
    "tasks": "/tutor-times/units/1/tasks",
    "timeline": "/tutor-times/units/1/timeline",
    "sessions page": "/tutor-times/units/1/sessions?per_page=50&page=2&",
}


def ranges(today: datetime) -> dict[str, str]:
    term = today.date() - timedelta(weeks=12)
    return {
        "last 7 days (default)": "",
        "a 12-week term": f"from={term}&to={today.date()}",
        "two years, by week": f"from={(today - timedelta(days=729)).date()}&to={today.date()}",
    }


def url(report: str, query: str) -> str:
    path = REPORTS[report]
    sep = "" if path.endswith("&") else "?"
    extra = "&bucket=week" if report == "timeline" and "two years" in query else ""
    return f"{path}{sep}{query}{extra}"


#: "Index Scan using ix", "Index Only Scan Backward using ix", "Bitmap Index Scan on ix"
INDEX_USE = r"Index (?:Only )?Scan (?:Backward )?(?:using|on) (\w+)"


def explain(app: Any, client: Any, path: str) -> list[str]:
    """EXPLAIN ANALYZE of every statement one request of ``path`` runs on our tables."""
    engine = reports_engine_of(app)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "marking_sessions" in statement and not statement.lstrip().startswith("EXPLAIN"):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        assert client.get(path).status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    plans = []
    with engine.connect() as conn:
        for statement, parameters in seen:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plans.append(statement.strip() + "\n" + "\n".join(r[0] for r in rows))
    return plans


#: the term's zone: its classes are wall-clock times there
TERM_ZONE = ZoneInfo("Australia/Melbourne")
#: how many rounds of alternating pairs of requests (without and with the timetable)
ROUNDS = 5


def term_timetable(today: datetime, markers: int) -> list[tuple[int | None, datetime, datetime]]:
    """A 12-week term ending this week: each tutor (1000 + i) takes two two-hour tutorials a
    week, and every tutor the Monday lecture."""
    monday = today.astimezone(TERM_ZONE).date() - timedelta(weeks=12)
    monday -= timedelta(days=monday.weekday())
    classes: list[tuple[int | None, datetime, datetime]] = []
    for week in range(13):
        first = monday + timedelta(weeks=week)
        lecture = datetime.combine(first, time(9), tzinfo=TERM_ZONE)
        classes.append((None, lecture, lecture + timedelta(hours=1)))
        for i in range(markers):
            for k in (0, 1):
                day = first + timedelta(days=(i + 2 * k) % 5)
                start = datetime.combine(day, time(10 + (i + 3 * k) % 8, 30), tzinfo=TERM_ZONE)
                classes.append((1000 + i, start, start + timedelta(hours=2)))
    return classes


def with_and_without(
    client: Any, path: str, calls: int, loader: Any
) -> tuple[list[int], list[int]]:
    """Samples of ``path`` without and with the class_times_loader, in alternating pairs."""
    from demo.extensions import tutor_times

    without: list[int] = []
    with_split: list[int] = []
    per_round = max(1, calls // ROUNDS)

    def measure(split: bool) -> None:
        if split:
            tutor_times.class_times_loader(loader)
        else:
            tutor_times.forget_workload_loaders()
        (with_split if split else without).extend(time_calls(lambda: client.get(path), 1))

    for i in range(ROUNDS):
        # each round is pairs of one request without and one with, the pair's order
        # swapped every round, so a burst of load elsewhere falls on both alike
        for _ in range(per_round):
            measure(split=i % 2 == 1)
            measure(split=i % 2 == 0)
    tutor_times.forget_workload_loaders()
    return without, with_split


def class_time_rows(client: Any, today: datetime, calls: int, markers: int) -> list[dict[str, Any]]:
    """Each report over each range, without and with a term's timetable: p50s and the ratio."""
    from demo.extensions import tutor_times

    term = term_timetable(today, markers)

    def loader(unit_id: int, start: datetime, end: datetime) -> list[Any]:
        # the whole term whatever the range, as a host with the term's timetable at hand
        # would answer: classes outside the range split nothing
        return term if unit_id == 1 else []

    rows = []
    for range_name, query in ranges(today).items():
        for report in REPORTS:
            path = url(report, query)
            tutor_times.class_times_loader(loader)
            for _ in range(3):  # warm, with the split's statements too
                assert client.get(path).status_code == 200
            without, with_split = with_and_without(client, path, calls, loader)
            base, split = percentiles(without), percentiles(with_split)
            row = {
                "report": report,
                "range": range_name,
                "classes": len(term),
                "without": base,
                "with_class_times": split,
                "ratio_p50": round(split["p50_ms"] / base["p50_ms"], 3),
            }
            rows.append(row)
            print(
                f"  {report:14} {range_name:24} p50 {base['p50_ms']:8.2f} ms without,"
                f" {split['p50_ms']:8.2f} ms with class times ({row['ratio_p50']:.2f}x)"
            )
    return rows


def years_of_data(database_url: str, sessions: int, activities: int) -> Flask:
    """The demo app on B3's data: ``sessions`` closed sessions of 200 tutors over two years in
    four units, ``activities`` activities each (B8 measures its dashboard on the same)."""
    ensure_database(database_url)
    app = bench_app(database_url)
    with step(f"{sessions:,} sessions, {activities * sessions:,} activities, 200 tutors"):
        fresh_schema(app)
        fill_closed_sessions(
            app, sessions, markers=200, units=4, activities_per_session=activities, days=730
        )
    return app


def convenor(app: Flask) -> FlaskClient:
    """A test client logged in as unit 1's convenor."""
    client = app.test_client()
    login = client.post("/login", json={"username": "convenor", "password": "password"})
    assert login.status_code == 200
    return client


def run(database_url: str, sessions: int, activities: int, calls: int) -> dict[str, Any]:
    app = years_of_data(database_url, sessions, activities)
    client = convenor(app)
    today = datetime.now(timezone.utc)
    results = []
    for range_name, query in ranges(today).items():
        for report in REPORTS:
            path = url(report, query)
            for _ in range(3):  # warm: plans, caches
                assert client.get(path).status_code == 200
            samples = time_calls(lambda p=path: client.get(p), calls)
            row = {"report": report, "range": range_name, **percentiles(samples)}
            results.append(row)
            print(
                f"  {report:14} {range_name:24} p50 {row['p50_ms']:8.2f} ms"
                f"  p99 {row['p99_ms']:8.2f} ms"
            )
    class_times = class_time_rows(client, today, calls, markers=200)
    plans: dict[str, list[str]] = {}
    for range_name, query in ranges(today).items():
        if range_name.startswith("last"):
            continue
        for report in REPORTS:
            plans[f"{report}, {range_name}"] = explain(app, client, url(report, query))
    index_use = {
        name: {
            "indexes": sorted(set(re.findall(INDEX_USE, "\n".join(p)))),
            "seq_scans": sorted(set(re.findall(r"Seq Scan on (\w+)", "\n".join(p)))),
            "execution_ms": [
                float(t) for t in re.findall(r"Execution Time: ([\d.]+) ms", "\n".join(p))
            ],
        }
        for name, p in plans.items()
    }
    return {
        "benchmark": "B3 reports",
        "sessions": sessions,
        "activities": activities * sessions,
        "results": results,
        "class_times": class_times,
        "index_use": index_use,
        "plans": plans,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv)
    if args.smoke:
        return run(smoke_url(DATABASE_URL), 2_000, 3, calls=3)
    result = run(DATABASE_URL, 100_000, 10, calls=30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "b3_explain.txt").write_text(
        "\n\n".join(f"## {r}\n\n" + "\n\n".join(p) for r, p in result.pop("plans").items())
    )
    save("b3_reports", result)
    return result


if __name__ == "__main__":
    main()
