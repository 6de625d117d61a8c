"""B6 history: importing a generated file into PostgreSQL, then rebuilding under a new timeout.

(a) ``flask tutor-times import`` in a process of its own, end to end, on a generated CSV and a
generated OnTrack log of the same activities (200 tutors, 4 units, a year): rows/s and the
process's peak RSS, at two file sizes (flat RSS means constant memory).
(b) ``rebuild_sessions`` of one unit after the timeout changed from 900 s to 600 s.
(c) The what-if summary of that unit over a 12-week term, ``?timeout=600``: p50 and p99.
(d) The floor: PostgreSQL alone taking the larger file's rows, already formatted, by one COPY
into ``session_activities`` (its indexes and foreign key, nothing placed, nothing parsed), the
best of three: no import of this schema can be faster than this on the same machine.
(e) The rest of what an import cannot skip, in the same run: the sessions the larger log's
import made, taken back whole by one COPY into ``marking_sessions`` (its indexes, foreign keys
and the roll-up and tally triggers; best of three), and the start-up of the command's process
(``flask tutor-times import --help``: the app loaded, nothing read; best of three).

``--rows`` sets the larger file's rows (default 200,000); ``--ten-million`` runs 10M.
``--log-lines N`` instead writes one OnTrack log of N lines (about N / 2.2 activities) and
imports it alone: rows/s and peak RSS of a log of that size (saved beside the main run).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DATABASE_URL,
    ROOT,
    add_staff,
    arguments,
    bench_app,
    engine_of,
    ensure_database,
    fresh_schema,
    percentiles,
    save,
    smoke_url,
    step,
)

MARKERS, UNITS = 200, 4
#: the generated history ends here (about 360 s an action before it), before any test clock
END = datetime(2026, 1, 1, tzinfo=timezone.utc)
ZONE = timezone(timedelta(hours=11))


def activities(rows: int, seed: int = 6) -> Iterator[tuple[int, int, str, datetime]]:
    """(marker, unit, ip, time) in time order: sittings of 20 actions by one tutor, with
    gaps on either side of the 600 s and 900 s timeouts, one after another."""
    rnd = random.Random(seed)
    at = END - timedelta(seconds=360 * rows)
    marker = 0
    for n in range(rows):
        if n % 20 == 0:
            marker = rnd.randrange(MARKERS)
        at += timedelta(seconds=rnd.choice([10, 30, 60, 300, 700, 1000]))
        yield 1000 + marker, 1 + marker % UNITS, f"10.{marker // 250}.{marker % 250}.{n % 2}", at


def write_csv(path: Path, rows: int) -> None:
    with open(path, "w") as out:
        out.write(
            "marker_id,unit_id,ip_address,action,project_id,task_id,task_definition_id,created_at\n"
        )
        for marker, unit, ip, at in activities(rows):
            out.write(f"{marker},{unit},{ip},inbox,,,,{at.isoformat()}\n")


def write_log(path: Path, rows: int) -> None:
    """The same activities as OnTrack's API logs them (doubtfire-api's
    config/initializers/log_initializer.rb layout): each a ``Started`` line, which shows the
    thread's previous address, and its ``Authenticated`` line; every tenth request a
    student's, which is no marking."""
    shown = "unknown"
    with open(path, "w") as out:
        for n, (marker, unit, ip, at) in enumerate(activities(rows)):
            stamp = at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S %z")
            out.write(
                f'{stamp},{shown},INFO: Started GET "/api/units/{unit}/tasks/inbox" for {ip}'
                f" at {stamp}\n{stamp},{ip},INFO: Authenticated tutor-{marker - 1000} from {ip}\n"
            )
            shown = ip
            if n % 10 == 0:
                out.write(
                    f'{stamp},{ip},INFO: Started GET "/api/projects/{n}" for 10.9.0.1 at'
                    f" {stamp}\n{stamp},10.9.0.1,INFO: Authenticated student-{n} from 10.9.0.1\n"
                )
                shown = "10.9.0.1"


def import_file(url: str, path: Path, fmt: str) -> dict[str, Any]:
    """One ``flask tutor-times import`` process: its wall time, rows/s and peak RSS."""
    env = {**os.environ, "FLASK_APP": "wsgi", "DEMO_CONFIG": "development", "DATABASE_URL": url}
    command = [sys.executable, "-m", "flask", "tutor-times", "import", str(path), "--format", fmt]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    summary = proc.stdout.read().decode().strip() if proc.stdout else ""
    assert status == 0, summary
    read = int(summary.split()[1])
    return {
        "format": fmt,
        "rows": read,
        "seconds": round(seconds, 2),
        "rows_per_s": round(read / seconds),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "summary": summary,
    }


def run_imports(url: str, sizes: list[int], tmp: Path) -> list[dict[str, Any]]:
    results = []
    for rows in sizes:
        for fmt, writer in (("csv", write_csv), ("ontrack-log", write_log)):
            app = bench_app(url)
            fresh_schema(app)
            with engine_of(app).begin() as conn:
                add_staff(conn, MARKERS, UNITS)
            path = tmp / f"history-{rows}.{'csv' if fmt == 'csv' else 'log'}"
            with step(f"write {rows:,} rows as {fmt}"):
                writer(path, rows)
            with step(f"import {rows:,} rows of {fmt}"):
                results.append(import_file(url, path, fmt))
            path.unlink()
    return results


def rebuild_and_whatif(url: str) -> dict[str, Any]:
    """On the last import's data: rebuild unit 1 under 600 s, then the what-if summary."""
    from demo.extensions import tutor_times

    app = bench_app(url, TUTOR_TIMES_SESSION_TIMEOUT=600)
    with app.app_context():
        started = time.perf_counter()
        report = tutor_times.rebuild_sessions(unit_id=1)
        rebuild_s = time.perf_counter() - started
    client = app.test_client()
    client.post("/login", json={"username": "admin", "password": "password"})
    term = "from=2025-10-06&to=2025-12-28&timeout=600"  # the last 12 weeks
    samples = []
    for _ in range(20):
        started_ns = time.perf_counter_ns()
        r = client.get(f"/tutor-times/units/1/summary?{term}")
        samples.append(time.perf_counter_ns() - started_ns)
        assert r.status_code == 200, r.get_json()
    return {
        "rebuild_s": round(rebuild_s, 2),
        "rebuild": report.summary(),
        "whatif": percentiles(samples),
    }


def copy_floor(url: str, rows: int) -> dict[str, Any]:
    """(d): ``rows`` activities of 1,000 stored sessions by one COPY, best of three runs."""
    app = bench_app(url)
    fresh_schema(app)
    engine = engine_of(app)
    with engine.begin() as conn:
        add_staff(conn, MARKERS, UNITS)
        conn.exec_driver_sql(
            "INSERT INTO marking_sessions (marker_id, unit_id, ip_address, start_time, end_time,"
            " duration_minutes, created_at, updated_at)"
            " SELECT 1000 + i %% %(markers)s, 1 + i %% %(units)s, '10.0.0.1', t, t, 1, t, t"
            " FROM generate_series(0, 999) AS i, LATERAL (SELECT %(end)s - i * interval '1 hour'"
            " AS t) AS at",
            {"markers": MARKERS, "units": UNITS, "end": END},
        )
        first = conn.exec_driver_sql("SELECT min(id) FROM marking_sessions").scalar_one()
    lines = "".join(
        f"{first + i % 1000}\tassessing\t{i % 5000}\t{i}\t{i % 30}\t"
        f"{(END - timedelta(seconds=i)).isoformat()}\t{END.isoformat()}\tserver\tfloor:{i}\n"
        for i in range(rows)
    ).encode()
    copy = (
        "COPY session_activities (marking_session_id, action, project_id, task_id,"
        " task_definition_id, created_at, updated_at, source, import_key) FROM STDIN"
    )
    best = best_copy(engine, "TRUNCATE session_activities", copy, lines)
    return {"rows": rows, "seconds": round(best, 2), "rows_per_s": round(rows / best)}


def best_copy(engine: Any, empty: str, copy: str, data: bytes) -> float:
    """Seconds of the fastest of three runs of ``copy`` taking ``data``, each committed,
    on a table ``empty`` empties before each (not timed)."""
    best = float("inf")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for _ in range(3):
            cursor.execute(empty)
            raw.commit()
            started = time.perf_counter()
            with cursor.copy(copy) as stream:
                stream.write(data)
            raw.commit()
            best = min(best, time.perf_counter() - started)
    finally:
        raw.close()
    return best


def dump_sessions(url: str) -> tuple[int, bytes]:
    """The sessions stored now, as COPY writes them (for :func:`sessions_floor`)."""
    raw = engine_of(bench_app(url)).raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy("COPY marking_sessions TO STDOUT") as stream:
            data = b"".join(bytes(chunk) for chunk in stream)
        raw.rollback()
    finally:
        raw.close()
    return data.count(b"\n"), data


def sessions_floor(url: str, sessions: tuple[int, bytes]) -> dict[str, Any]:
    """(e): the sessions an import made, taken back by one COPY, best of three."""
    app = bench_app(url)
    fresh_schema(app)
    engine = engine_of(app)
    with engine.begin() as conn:
        add_staff(conn, MARKERS, UNITS)
    best = best_copy(
        engine, "TRUNCATE marking_sessions CASCADE", "COPY marking_sessions FROM STDIN", sessions[1]
    )
    return {"sessions": sessions[0], "seconds": round(best, 2)}


def start_up(url: str) -> dict[str, Any]:
    """(e): the import command's process with nothing to do, best of three."""
    env = {**os.environ, "FLASK_APP": "wsgi", "DEMO_CONFIG": "development", "DATABASE_URL": url}
    command = [sys.executable, "-m", "flask", "tutor-times", "import", "--help"]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - started)
    return {"seconds": round(best, 2)}


#: lines write_log writes per activity: a Started and an Authenticated line, and every tenth
#: activity a student's request of two lines
LINES_PER_ROW = 2.2


def log_of_lines(url: str, lines: int, tmp: Path) -> dict[str, Any]:
    """One OnTrack log of about ``lines`` lines, imported alone."""
    rows = round(lines / LINES_PER_ROW)
    app = bench_app(url)
    fresh_schema(app)
    with engine_of(app).begin() as conn:
        add_staff(conn, MARKERS, UNITS)
    path = tmp / "production.log"
    with step(f"write a log of {lines:,} lines"):
        write_log(path, rows)
    with open(path, "rb") as f:
        written = sum(1 for _ in f)
    with step(f"import {written:,} lines of ontrack-log"):
        result = import_file(url, path, "ontrack-log")
    return {**result, "lines": written, "bytes": path.stat().st_size}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(
        __doc__,
        argv,
        ("--rows", {"type": int, "default": 200_000, "help": "rows of the larger file"}),
        ("--ten-million", {"action": "store_true", "help": "the larger file has 10M rows"}),
        ("--log-lines", {"type": int, "default": 0, "help": "one log of this many lines"}),
    )
    url = smoke_url(DATABASE_URL) if args.smoke else DATABASE_URL
    ensure_database(url)
    load_before = os.getloadavg()[0]
    if args.log_lines:
        with tempfile.TemporaryDirectory() as tmp:
            big = log_of_lines(url, args.log_lines, Path(tmp))
        big["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        if not args.smoke:
            save("b6_log_lines", big)
        return big
    rows = 2_000 if args.smoke else 10_000_000 if args.ten_million else args.rows
    sizes = [rows // 10, rows]
    with tempfile.TemporaryDirectory() as tmp:
        imports = run_imports(url, sizes, Path(tmp))
    sessions = dump_sessions(url)  # the larger log's
    with step("rebuild unit 1 and its what-if summary"):
        after = rebuild_and_whatif(url)
    with step(f"the floor: COPY {rows:,} formatted rows"):
        floor = copy_floor(url, rows)
    with step(f"the rest of the floor: COPY {sessions[0]:,} sessions, the process's start-up"):
        rest = {"sessions_copy": sessions_floor(url, sessions), "start_up": start_up(url)}
    result = {"imports": imports, **after, "copy_floor": floor, "floor_rest": rest}
    # the machine is shared: the load around the run says how much of it the run had
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if not args.smoke:
        save("b6_import", result)
    return result


if __name__ == "__main__":
    print(main(sys.argv[1:]))
