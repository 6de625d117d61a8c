"""B3 reports: the report endpoints of one unit over years of data, at two sizes.

1x: 1M activities in 100k sessions of 200 tutors over two years, in four units. 10x: 10M
activities in 1M sessions of 2,000 tutors in 20 units. Each data set is generated in SQL
into a database of its own and kept (a marker table says what it holds), so a rerun times
the same data without generating it again. The convenor of unit 1 asks for its summary,
tasks, timeline (two years by day and by week), a sessions page and the dashboard page,
through the Flask test client (JSON or HTML rendering and the role check included, HTTP
aside), over ranges from one day to two years, and the what-if summary for a term. Every SQL
statement of one request per report is then run again under EXPLAIN ANALYZE.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from benchmarks.common import (
    DATABASE_URL,
    RESULTS,
    arguments,
    bench_app,
    engine_of,
    ensure_database,
    fill_closed_sessions,
    fresh_schema,
    percentiles,
    save,
    smoke_url,
    step,
    time_calls,
    vacuum,
)
from tutor_times import reports, rollups
from tutor_times.constants import ASSESSING

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

#: (label, sessions, tutors, units, activities per session): today's size and ten times it
SCALES = {
    "1x": (100_000, 200, 4, 10),
    "10x": (1_000_000, 2_000, 20, 10),
}
SMOKE = (2_000, 20, 4, 3)
#: open sessions of unit 1 at the data's end, counted live by every report
OPEN_SESSIONS = 20
#: the bounds each row must meet (p50)
BOUND_MS = {"report": 50.0, WHAT_IF: 200.0}


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
    engine = engine_of(app)
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
        conn.exec_driver_sql("SET jit = off")  # as the request ran them (reports.without_jit)
        for statement, parameters in seen:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plans.append(statement.strip() + "\n" + "\n".join(r[0] for r in rows))
    return plans


def dataset(
    app: Any, database_url: str, sessions: int, markers: int, units: int, per: int
) -> datetime:
    """The data set, generated in SQL, or the one already in the database when its marker
    says it is the same; returns the data's end."""
    engine = engine_of(app)
    wanted = f"sessions={sessions} markers={markers} units={units} per={per} open={OPEN_SESSIONS}"
    with engine.connect() as conn:
        if sa.inspect(conn).has_table(MARKER):
            row = conn.execute(sa.text(f"SELECT description, data_end FROM {MARKER}")).first()
            if row is not None and row.description == wanted:
                print(f"  kept: {wanted}")
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
        )
        with engine.begin() as conn:
            add_open_sessions(conn, end)
            rollups.rebuild_all(conn, models_of(app))
            conn.execute(sa.text(f"CREATE TABLE {MARKER} (description text, data_end timestamptz)"))
            conn.execute(sa.text(f"INSERT INTO {MARKER} VALUES (:d, :e)"), {"d": wanted, "e": end})
        vacuum(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE tutor_times_blocks"))
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


def models_of(app: Any) -> Any:
    from demo.extensions import tutor_times

    with app.app_context():
        return tutor_times.models


def run(
    database_url: str, scale: tuple[int, int, int, int], calls: int, label: str
) -> dict[str, Any]:
    sessions, markers, units, per = scale
    ensure_database(database_url)
    app = bench_app(database_url)
    end = dataset(app, database_url, sessions, markers, units, per)
    client = app.test_client()
    login = client.post("/login", json={"username": "convenor", "password": "password"})
    assert login.status_code == 200
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
    return {
        "scale": label,
        "stored_vs_raw": compared,
        "sessions": sessions,
        "activities": per * sessions,
        "tutors": markers,
        "units": units,
        "results": results,
        "index_use": index_use,
        "plans": plans,
    }


def from_raw_rows(conn: sa.Connection, models: Any, scope: Any) -> dict[str, Any]:
    """The summary as it was computed before anything was stored: every session's
    assessments counted from its activities, R10 merged over every session of the range."""
    ms, act = models.MarkingSession, models.SessionActivity
    counted = (
        sa.select(sa.func.count())
        .where(act.marking_session_id == ms.id, act.action == ASSESSING)
        .scalar_subquery()
    )
    per_session = (
        sa.select(ms.marker_id.label("marker"), counted.label("n"))
        .where(*scope.where(models))
        .subquery()
    )
    c = per_session.c
    rows = conn.execute(sa.select(c.marker, sa.func.count(), sa.func.sum(c.n)).group_by(c.marker))
    minutes = reports.merged_minutes_from_sessions(conn, models, scope, min_minutes=1)
    return {m: (n, int(a), minutes[None, m]) for m, n, a in rows}


def stored_vs_raw(app: Any, end: datetime, calls: int) -> list[dict[str, Any]]:
    """The summary of unit 1 from the stored figures and from the raw rows, timed in turn in
    one process (the report functions alone: no HTTP, no JSON), with the same answer."""
    engine, models = engine_of(app), models_of(app)
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
                return from_raw_rows(c, models, sc)

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
    and with their upkeep (``rollups.sessions_changed``) made a no-op, interleaved round by
    round, on a database of its own. Appends to an open session (B1's hot path) write none."""
    from demo.extensions import tutor_times
    from tutor_times import sql_store

    ensure_database(database_url)
    app = bench_app(database_url)
    fresh_schema(app)
    kept = sql_store.rollups.sessions_changed
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
                    sql_store.rollups.sessions_changed = kept if mode == "kept" else _nothing
                    started = time.perf_counter_ns()
                    tutor_times.record_activity("assessing", **key)
                    samples[mode].append(time.perf_counter_ns() - started)
                    sql_store.rollups.sessions_changed = kept
                    now += timedelta(minutes=1)
        finally:
            tutor_times.clock = previous
            sql_store.rollups.sessions_changed = kept
    timed = {mode: percentiles(ns) for mode, ns in samples.items()}
    ratio = round(timed["kept"]["p50_ms"] / timed["not kept"]["p50_ms"], 2)
    print(f"  closing request: {timed}, kept/not kept p50 {ratio}")
    return {**timed, "kept_vs_not_p50": ratio}


def _nothing(*args: Any) -> None:
    return None


def scale_url(database_url: str, label: str) -> str:
    """Each scale's own database, so both data sets are kept between runs."""
    return database_url if label == "1x" else f"{database_url}_{label}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv)
    if args.smoke:
        result = run(smoke_url(DATABASE_URL), SMOKE, calls=3, label="1x")
        return {"benchmark": "B3 reports", "scales": [result], **_flat(result)}
    scales = [
        run(scale_url(DATABASE_URL, label), scale, calls=30, label=label)
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
    return {"results": result["results"], "plans": result["plans"]}


if __name__ == "__main__":
    main()
