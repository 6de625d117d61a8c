"""B3 reports: the report endpoints of one unit over years of data, at two sizes.

1x: 1M activities in 100k sessions of 200 tutors over two years, in four units, every tutor
in every unit. 10x: 10M activities in 1M sessions of 2,000 tutors in 20 units, each tutor in
two of them (200 tutors a unit, as at 1x, with twice the sessions). Each has 20 open
sessions in unit 1 at its end. Each data set is generated in SQL into a database of its own
and kept (a marker table says what it holds), so a rerun times the same data. The convenor
of unit 1 asks for its summary, tasks, timeline (two years by day and by week), a sessions
page and the dashboard page, through the Flask test client (JSON or HTML rendering and the
role check included, HTTP aside), over ranges from one day to two years, and for the what-if
summary of a term. Every SQL statement of one request per report and range is run again
under EXPLAIN ANALYZE.

Then, at each size, the same requests with the host's class_times_loader answering a full
term's timetable of unit 1 (two two-hour tutorials a week for each of the 200 tutors and a
weekly lecture of every tutor, 12 weeks, at Melbourne wall-clock times), alternating request
by request with the requests without it, so both see the same load: the split (R12) against
no split; and how soon a moved class shows. And what keeping the stored figures adds to a
request that closes its key's idle session. ``--class-times`` measures only the class-time
rows and the moved class again, into the last run's results.
"""

from __future__ import annotations

import importlib
import re
import time as timer
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
    engine_of,
    ensure_database,
    fill_closed_sessions,
    fresh_schema,
    models_of,
    percentiles,
    reports_engine_of,
    save,
    smoke_url,
    step,
    time_calls,
    vacuum,
)
from tutor_times import reports
from tutor_times.store import class_store, figures, rollups

REPORTS = {
    "summary": "/tutor-times/units/1/summary",
    "tasks": "/tutor-times/units/1/tasks",
    "timeline": "/tutor-times/units/1/timeline",
    "sessions page": "/tutor-times/units/1/sessions?per_page=50&page=2&",
    "dashboard": "/tutor-times/units/1/dashboard",
}
#: the what-if summary (R2 under another timeout, from raw activities), for a term only
WHAT_IF = "what-if summary"
WHAT_IF_PATH = "/tutor-times/units/1/summary?timeout=600&"

#: label → (sessions, tutors, units, activities per session, units per tutor or None: all)
SCALES: dict[str, tuple[int, int, int, int, int | None]] = {
    "1x": (100_000, 200, 4, 10, None),
    "10x": (1_000_000, 2_000, 20, 10, 2),
}
SMOKE = (2_000, 20, 4, 3, None)
#: open sessions of unit 1 at the data's end, counted live by every report
OPEN_SESSIONS = 20
#: the bounds each row must meet (p50)
BOUND_MS = {"report": 50.0, WHAT_IF: 200.0}
#: the bound of a class-time row: its p50 within this of the same report without class times
CLASS_TIME_RATIO = 1.25
#: the stored class-time split (tutor_times/store/class_store.py)
CLASS_TABLES = (class_store.MONTHS, class_store.BLOCKS, class_store.CHECKED, rollups.VERSIONS)
#: how many classes are moved, one after another, to time how soon a report reflects it
EDITS = 5


def ranges(end: datetime) -> dict[str, str]:
    """Ranges ending on the data's last day (so a data set kept for a later run still
    answers the same ranges)."""
    last = end.date()

    def since(days: int) -> str:
        return f"from={last - timedelta(days=days - 1)}&to={last}"

    return {
        "one day": since(1),
        "7 days": since(7),
        "a 12-week term": since(84),
        "one year": since(365),
        "two years, by day": since(730),
        "two years, by week": since(730) + "&bucket=week",
    }


def url(report: str, query: str) -> str:
    if report == WHAT_IF:
        return WHAT_IF_PATH + query
    path = REPORTS[report]
    if report != "timeline":
        query = query.replace("&bucket=week", "")
    sep = "" if path.endswith("&") else "?"
    return f"{path}{sep}{query}"


def rows_to_time(end: datetime) -> list[tuple[str, str]]:
    """(report, range) of every row: each report over each range (the timeline's two-year
    ranges by day and by week, the others once), and the what-if summary for a term."""
    chosen = []
    for range_name in ranges(end):
        for report in REPORTS:
            if range_name.endswith("by week") and report != "timeline":
                continue
            chosen.append((report, range_name))
    chosen.append((WHAT_IF, "a 12-week term"))
    return chosen


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


def class_time_rows(
    client: Any, engine: sa.Engine, end: datetime, calls: int, markers: int
) -> list[dict[str, Any]]:
    """Every report over every range, without and with a term's timetable:
    p50s and the ratio."""
    from demo.extensions import tutor_times

    term = term_timetable(end, markers)

    def loader(unit_id: int, start: datetime, end: datetime) -> list[Any]:
        # the whole term whatever the range, as a host with the term's timetable at hand
        # would answer: classes outside the range split nothing
        return term if unit_id == 1 else []

    rows = []
    # the stored split filled by the first report of each range, then what autovacuum does
    tutor_times.class_times_loader(loader)
    for query in ranges(end).values():
        for report in ("summary", "timeline"):
            assert client.get(url(report, query)).status_code == 200
    tutor_times.forget_workload_loaders()
    vacuum(engine, CLASS_TABLES)
    for range_name in ranges(end):
        query = ranges(end)[range_name]
        for report in REPORTS:
            if range_name.endswith("by week") and report != "timeline":
                continue
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
                "bound_ratio": CLASS_TIME_RATIO,
                "bound_ms": BOUND_MS["report"],
            }
            rows.append(row)
            print(
                f"  {report:14} {range_name:24} p50 {base['p50_ms']:8.2f} ms without,"
                f" {split['p50_ms']:8.2f} ms with class times ({row['ratio_p50']:.2f}x)"
            )
    return rows


def reflect_a_change(client: Any, end: datetime, markers: int) -> dict[str, Any]:
    """How soon a moved class shows: a term's timetable of unit 1 in place and reported on,
    one tutor's tutorial is moved an hour later, :data:`EDITS` times (a tutor each time);
    the first summary and the first timeline of the term after each move (which split again
    the (month, tutor) of the months whose classes changed, and store them), against the
    same requests once stored."""
    from demo.extensions import tutor_times

    term = term_timetable(end, markers)
    current = [list(term)]

    def loader(unit_id: int, start: datetime, end: datetime) -> list[Any]:
        return current[0] if unit_id == 1 else []

    tutor_times.class_times_loader(loader)
    query = ranges(end)["a 12-week term"]
    paths = {"summary": url("summary", query), "timeline": url("timeline", query + "&bucket=week")}
    first: dict[str, list[int]] = {name: [] for name in paths}
    then: dict[str, list[int]] = {name: [] for name in paths}
    try:
        for path in paths.values():
            for _ in range(3):
                assert client.get(path).status_code == 200
        for k in range(EDITS):
            classes = list(current[0])
            # the tutor's first tutorial of the term's sixth week, an hour later
            i = next(
                j
                for j, (who, start, _) in enumerate(classes)
                if who == 1000 + k and start > classes[0][1] + timedelta(weeks=5)
            )
            who, start, stop = classes[i]
            classes[i] = (who, start + timedelta(hours=1), stop + timedelta(hours=1))
            current[0] = classes
            for name, path in paths.items():
                started = timer.perf_counter_ns()
                assert client.get(path).status_code == 200
                first[name].append(timer.perf_counter_ns() - started)
                then[name].extend(time_calls(lambda p=path: client.get(p), 5))
    finally:
        tutor_times.forget_workload_loaders()
    out: dict[str, Any] = {
        name: {"first": percentiles(first[name]), "then": percentiles(then[name])} for name in paths
    }
    out["edits"] = EDITS
    print(f"  a moved class, the term's first report after it: {out}")
    return out


def round_trip_floor(database_url: str, scale: Any, calls: int) -> list[dict[str, Any]]:
    """What reading the stored split cannot go below: the reports without class times, with
    them, and without them plus one trivial statement (``SELECT 1``) on the report's
    connection wherever the split reads its stored figures (once per report), alternating
    request by request over the short and long ranges."""
    from demo.extensions import tutor_times

    app = bench_app(database_url)
    end = dataset(app, scale)
    client = convenor(app)
    term = term_timetable(end, 200)
    figured = reports.figured_by
    # where the summary and the timeline look it up (each module imported it by name)
    looked_up = [
        importlib.import_module(f"tutor_times.reports.{m}") for m in ("summary", "timeline")
    ]

    def one_more(conn: Any, *args: Any, **kwargs: Any) -> Any:
        found = figured(conn, *args, **kwargs)
        conn.exec_driver_sql("SELECT 1").all()
        return found

    def loader(unit_id: int, start: datetime, end: datetime) -> list[Any]:
        return term if unit_id == 1 else []

    rows = []
    for range_name in ("7 days", "a 12-week term", "two years, by day"):
        for report in ("summary", "timeline", "dashboard"):
            path = url(report, ranges(end)[range_name])
            samples: dict[str, list[int]] = {"without": [], "with": [], "floor": []}
            for i in range(calls):
                order = list(samples)[i % 3 :] + list(samples)[: i % 3]
                for variant in order:
                    if variant == "with":
                        tutor_times.class_times_loader(loader)
                    for module in looked_up:
                        module.figured_by = one_more if variant == "floor" else figured
                    try:
                        samples[variant].extend(time_calls(lambda p=path: client.get(p), 1))
                    finally:
                        for module in looked_up:
                            module.figured_by = figured
                        tutor_times.forget_workload_loaders()
            timed = {k: percentiles(v) for k, v in samples.items()}
            row = {"report": report, "range": range_name, **timed}
            rows.append(row)
            print(
                f"  {report:10} {range_name:18} without {timed['without']['p50_ms']:7.2f}"
                f" with {timed['with']['p50_ms']:7.2f} floor {timed['floor']['p50_ms']:7.2f}"
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


def dataset(app: Any, scale: tuple[int, int, int, int, int | None]) -> datetime:
    """The data set, generated in SQL, or the one already in the database when its marker
    says it is the same; returns the data's end."""
    sessions, markers, units, per, spread = scale
    engine = engine_of(app)
    wanted = (
        f"sessions={sessions} markers={markers} units={units} per={per} spread={spread}"
        f" open={OPEN_SESSIONS} figures=5"
    )
    with engine.connect() as conn:
        if sa.inspect(conn).has_table(MARKER):
            row = conn.execute(sa.text(f"SELECT description, data_end FROM {MARKER}")).first()
            # the marker, and the sessions it speaks of (another benchmark may have replaced
            # the tables and left the marker)
            count = conn.execute(sa.text("SELECT count(*) FROM marking_sessions")).scalar()
            if row is not None and row.description == wanted and count == sessions + OPEN_SESSIONS:
                print(f"  kept: {wanted}")
                # what a later version declares (the stored class-time split, the months'
                # versions), as its migrations would make it: tables, the sequence, the
                # triggers again (create_all's own), and a version for each rolled month
                models_of(app)
                from demo.extensions import db

                db.metadata.create_all(conn)
                conn.execute(sa.text(rollups.FILL[-1]))
                conn.commit()
                return row.data_end  # type: ignore[no-any-return]
    end = datetime.now(timezone.utc).replace(microsecond=0)
    label = (
        f"{sessions:,} sessions, {per * sessions:,} activities, {markers:,} tutors, {units} units"
    )
    with step(label):
        fresh_schema(app)
        fill_closed_sessions(
            app,
            sessions,
            markers=markers,
            units=units,
            activities_per_session=per,
            days=730,
            end=end - timedelta(hours=1),
            units_per_tutor=spread,
        )
        with engine.begin() as conn:
            add_open_sessions(conn, end)
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {MARKER}"))  # another data set's
            conn.execute(sa.text(f"CREATE TABLE {MARKER} (description text, data_end timestamptz)"))
            conn.execute(sa.text(f"INSERT INTO {MARKER} VALUES (:d, :e)"), {"d": wanted, "e": end})
        vacuum(engine)
    return end


MARKER = "bench_b3_dataset"


def add_open_sessions(conn: sa.Connection, end: datetime) -> None:
    """Open sessions of unit 1 in the data's last hour, five activities each."""
    conn.execute(
        sa.text(
            """
            WITH s AS (
                INSERT INTO marking_sessions (marker_id, unit_id, ip_address, start_time,
                    created_at, updated_at)
                SELECT 999 + g, 1, '10.9.9.' || g, t, t, t
                FROM (SELECT g, CAST(:end AS timestamptz) - interval '50 minutes'
                          + interval '1 minute' * g AS t
                      FROM generate_series(1, :n) AS g) AS x
                RETURNING id, start_time)
            INSERT INTO session_activities (marking_session_id, action, project_id, task_id,
                task_definition_id, created_at, updated_at)
            SELECT s.id, CASE WHEN k % 2 = 0 THEN 'assessing' ELSE 'inbox' END, 1,
                   1 + (s.id + k) % 5000, 1 + (s.id + k) % 30,
                   s.start_time + interval '3 minutes' * k, s.start_time + interval '3 minutes' * k
            FROM s, generate_series(0, 4) AS k
            """
        ),
        {"end": end, "n": OPEN_SESSIONS},
    )


def run(
    database_url: str,
    scale: tuple[int, int, int, int, int | None],
    calls: int,
    label: str,
    *,
    class_times: bool,
) -> dict[str, Any]:
    sessions, markers, units, per, _ = scale
    ensure_database(database_url)
    app = bench_app(database_url)
    end = dataset(app, scale)
    client = convenor(app)
    results = []
    for report, range_name in rows_to_time(end):
        path = url(report, ranges(end)[range_name])
        for _ in range(3):  # warm: plans, caches
            assert client.get(path).status_code == 200, path
        samples = time_calls(lambda p=path: client.get(p), calls)
        bound = BOUND_MS.get(report, BOUND_MS["report"])
        row = {"report": report, "range": range_name, "bound_ms": bound, **percentiles(samples)}
        results.append(row)
        print(
            f"  {label:4} {report:15} {range_name:20} p50 {row['p50_ms']:8.2f} ms"
            f"  p99 {row['p99_ms']:8.2f} ms  {'met' if row['p50_ms'] < bound else 'NOT met'}"
        )
    plans: dict[str, list[str]] = {}
    for report, range_name in rows_to_time(end):
        if range_name == "one day" or report == "dashboard":
            continue  # the dashboard runs the summary's, tasks' and sessions' statements
        path = url(report, ranges(end)[range_name])
        plans[f"{report}, {range_name}"] = explain(app, client, path)
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
    compared = stored_vs_raw(app, end, calls=max(3, calls // 3))
    split = class_time_rows(client, engine_of(app), end, calls, markers=200) if class_times else []
    moved = reflect_a_change(client, end, markers=200) if class_times else {}
    return {
        "scale": label,
        "class_times": split,
        "moved_class": moved,
        "stored_vs_raw": compared,
        "sessions": sessions,
        "activities": per * sessions,
        "tutors": markers,
        "units": units,
        "results": results,
        "index_use": index_use,
        "plans": plans,
    }


def stored_vs_raw(app: Any, end: datetime, calls: int) -> list[dict[str, Any]]:
    """The summary of unit 1 from the stored figures and from the raw rows (every session's
    assessments counted, R10 merged over every session), timed in turn in one process (the
    report functions alone: no HTTP, no JSON), with the same answer."""
    engine, models = reports_engine_of(app), models_of(app)
    rows = []
    for days in (84, 730):
        scope = reports.Scope(end - timedelta(days=days), end, unit_id=1)
        with engine.connect() as conn:

            def stored(c: sa.Connection = conn, sc: Any = scope) -> dict[str, Any]:
                found = reports.summary(c, models, sc, min_minutes=1)["tutors"]
                return {
                    t["marker_id"]: (t["sessions"], t["assessments"], t["minutes"]) for t in found
                }

            def raw(c: sa.Connection = conn, sc: Any = scope) -> dict[str, Any]:
                found = reports.summary(c, models, sc, min_minutes=1, stored=False)["tutors"]
                return {
                    t["marker_id"]: (t["sessions"], t["assessments"], t["minutes"]) for t in found
                }

            assert stored() == raw()
            timed = {
                name: percentiles(time_calls(f, calls))
                for name, f in (("stored", stored), ("raw", raw))
            }
        rows.append(
            {
                "days": days,
                **timed,
                "raw_vs_stored_p50": round(timed["raw"]["p50_ms"] / timed["stored"]["p50_ms"], 2),
            }
        )
        print(
            f"  summary over {days} days: stored p50 {timed['stored']['p50_ms']} ms, raw p50 {timed['raw']['p50_ms']} ms"
        )
    return rows


def closing_cost(database_url: str, rounds: int) -> dict[str, Any]:
    """What keeping the figures adds to a request whose activity closes its key's idle
    session (the next activity after TIMEOUT): that request, timed with the figures kept
    and with their upkeep (``figures.sessions_changed``) made a no-op, interleaved round by
    round, on a database of its own. Appends to an open session (B1's hot path) write none."""
    from demo.extensions import tutor_times
    from tutor_times.store import sql_store

    ensure_database(database_url)
    app = bench_app(database_url)
    fresh_schema(app)
    kept = figures.sessions_changed
    samples: dict[str, list[int]] = {"kept": [], "not kept": []}
    now = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    with app.app_context():
        previous = tutor_times.clock
        try:
            for i in range(rounds):
                for mode in samples:
                    n = 2 * i + (mode == "kept")
                    ip = f"10.{n // 62500}.{n // 250 % 250}.{n % 250}"
                    key = {"marker_id": 3, "unit_id": 1, "ip_address": ip}
                    tutor_times.clock = lambda t=now: t
                    tutor_times.record_activity("assessing", **key)
                    later = now + timedelta(seconds=901)
                    tutor_times.clock = lambda t=later: t
                    sql_store.figures.sessions_changed = kept if mode == "kept" else _nothing
                    started = timer.perf_counter_ns()
                    tutor_times.record_activity("assessing", **key)
                    samples[mode].append(timer.perf_counter_ns() - started)
                    sql_store.figures.sessions_changed = kept
                    now += timedelta(minutes=1)
        finally:
            tutor_times.clock = previous
            sql_store.figures.sessions_changed = kept
    timed = {mode: percentiles(ns) for mode, ns in samples.items()}
    ratio = round(timed["kept"]["p50_ms"] / timed["not kept"]["p50_ms"], 2)
    print(f"  closing request: {timed}, kept/not kept p50 {ratio}")
    return {**timed, "kept_vs_not_p50": ratio}


def _nothing(*args: Any) -> None:
    return None


def scale_url(database_url: str, label: str) -> str:
    """Each scale's own database, apart from every other benchmark's, so both data sets
    are kept between runs."""
    return f"{database_url}_b3_{label}"


def class_times_again(calls: int) -> dict[str, Any]:
    """Only the class-time rows and the moved class, at each size, measured again into the
    last run's results (the other rows kept as they were), with the machine's load average
    when they began and ended."""
    import json
    import os

    path = RESULTS / "b3_reports.json"
    result = json.loads(path.read_text())
    for label, scale in SCALES.items():
        app = bench_app(scale_url(DATABASE_URL, label))
        end = dataset(app, scale)
        client = convenor(app)
        began = os.getloadavg()[0]
        rows = class_time_rows(client, engine_of(app), end, calls, markers=200)
        moved = reflect_a_change(client, end, markers=200)
        ended = os.getloadavg()[0]
        [kept] = [s for s in result["scales"] if s["scale"] == label]
        kept.update(class_times=rows, moved_class=moved, class_times_load=[began, ended])
    save("b3_reports", {k: v for k, v in result.items() if k != "machine"})
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(
        __doc__,
        argv,
        ("--floor", {"choices": list(SCALES), "help": "only the split's round-trip floor"}),
        (
            "--class-times",
            {"action": "store_true", "help": "only the class-time rows, into the last results"},
        ),
    )
    if args.class_times:
        return class_times_again(calls=30)
    if args.floor:
        label = args.floor
        rows = round_trip_floor(scale_url(DATABASE_URL, label), SCALES[label], calls=30)
        save(f"b3_floor_{label}", {"benchmark": "B3 class times, floor", "rows": rows})
        return {"rows": rows}
    if args.smoke:
        result = run(smoke_url(DATABASE_URL), SMOKE, calls=3, label="1x", class_times=True)
        return {"benchmark": "B3 reports", "scales": [result], **_flat(result)}
    scales = [
        run(scale_url(DATABASE_URL, label), scale, calls=30, label=label, class_times=True)
        for label, scale in SCALES.items()
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "b3_explain.txt").write_text(
        "\n\n".join(
            f"## {s['scale']}: {r}\n\n" + "\n\n".join(p)
            for s in scales
            for r, p in s.pop("plans").items()
        )
    )
    closing = closing_cost(f"{DATABASE_URL}_closing", rounds=200)
    result = {"benchmark": "B3 reports", "scales": scales, "closing_request": closing}
    save("b3_reports", result)
    return result


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("results", "plans", "class_times")}


if __name__ == "__main__":
    main()
