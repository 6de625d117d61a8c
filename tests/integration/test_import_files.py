"""Files of history as users really have them: edited, re-sorted, regenerated, cut short, with
a line of half a gigabyte, imported twice at once. A row is keyed by what it says, a line is
read in bounded memory, and a bad row or a bad file is counted or named, never a traceback."""

from __future__ import annotations

import csv
import gzip
import os
import random
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times
from tutor_times.history.rows import DUPLICATE, MALFORMED, ImportReport
from tutor_times.history.sources import CSV_COLUMNS

from ..conftest import BACKENDS, Clock, build, stored
from .test_history import stored_sessions
from .test_property import KEYS, TIMEOUT, reference

ROOT = Path(__file__).resolve().parents[2]
HEADER = list(CSV_COLUMNS)
K = KEYS[0]
T = datetime.fromisoformat("2025-03-04T09:00:00+00:00")


@pytest.fixture(params=BACKENDS)
def files_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def record(n: int, key: tuple[int, int, str] = K, minutes: int = 5) -> list[Any]:
    """The n-th assessing row of a file (from 0): task n + 1, ``minutes`` apart."""
    at = T + timedelta(minutes=minutes * n)
    return [key[0], key[1], key[2], "assessing", "", n + 1, "", at.isoformat()]


def write_csv(path: Path, records: list[list[Any]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(records)
    return path


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["tutor-times", "import", *args])


def imported(app: Flask, *args: str) -> str:
    result = invoke(app, *args)
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def activities(app: Flask) -> Counter[tuple[Any, ...]]:
    """The stored activities as (key, action, task, time), counted."""
    ms, act = tutor_times.MarkingSession, tutor_times.SessionActivity
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                ms.marker_id, ms.unit_id, ms.ip_address, act.action, act.task_id, act.created_at
            ).join(act, act.marking_session_id == ms.id)
        ).all()
        db.session.commit()
    return Counter((r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows)


def expected(records: list[list[Any]]) -> Counter[tuple[Any, ...]]:
    return Counter((r[0], r[1], r[2], r[3], r[5], datetime.fromisoformat(r[7])) for r in records)


# -- item 4: a row is keyed by what it says ------------------------------------------------


def test_a_row_inserted_mid_file_is_the_only_row_added(files_app: Flask, tmp_path: Path) -> None:
    """A.csv (a header and 10 assessing rows), then B.csv: A with a row inserted after line
    8. Keyed by line number, the new row was taken for a duplicate and the last row stored
    twice; keyed by content, B adds the new row alone."""
    a = [record(n) for n in range(10)]
    new = record(100, minutes=1)  # task 100, at a time of its own
    b = a[:7] + [new] + a[7:]  # line 1 is the header: the new row is line 9
    said = imported(files_app, str(write_csv(tmp_path / "A.csv", a)))
    assert "read 10 rows, imported 10, skipped 0" in said
    said = imported(files_app, str(write_csv(tmp_path / "B.csv", b)))
    assert "read 11 rows, imported 1, skipped 10 (10 duplicate)" in said
    assert activities(files_app) == expected(b)  # each row once: no assessment counted twice
    assert stored_sessions(files_app) == reference(
        [("act", K, datetime.fromisoformat(r[7])) for r in b], TIMEOUT
    )


def test_a_resorted_or_regenerated_file_adds_nothing(files_app: Flask, tmp_path: Path) -> None:
    """The same rows in another order, with other quoting, spacing and time zone: the
    fields the rows say are the same, so nothing is added."""
    a = [record(n) for n in range(10)]
    imported(files_app, str(write_csv(tmp_path / "A.csv", a)))
    shuffled = a[:]
    random.Random(3).shuffle(shuffled)
    said = imported(files_app, str(write_csv(tmp_path / "sorted.csv", shuffled)))
    assert "read 10 rows, imported 0, skipped 10 (10 duplicate)" in said
    regenerated = tmp_path / "regenerated.csv"
    with open(regenerated, "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(HEADER)
        for r in reversed(a):
            local = datetime.fromisoformat(r[7]).astimezone(
                datetime.fromisoformat("2025-01-01T00:00:00+11:00").tzinfo
            )
            writer.writerow([f" {r[0]}", r[1], r[2], r[3], " ", f"{r[5]} ", "", local.isoformat()])
    said = imported(files_app, str(regenerated))
    assert "read 10 rows, imported 0, skipped 10 (10 duplicate)" in said
    assert activities(files_app) == expected(a)


def test_identical_rows_are_each_imported_once(files_app: Flask, tmp_path: Path) -> None:
    """Two rows alike in every field are two activities (two saves in one second): both
    are imported, and importing the file again, or the file with one of them, adds nothing."""
    a = [record(n) for n in range(4)]
    twice = [*a, a[2]]
    said = imported(files_app, str(write_csv(tmp_path / "twice.csv", twice)))
    assert "read 5 rows, imported 5, skipped 0" in said
    said = imported(files_app, str(write_csv(tmp_path / "again.csv", list(reversed(twice)))))
    assert "read 5 rows, imported 0, skipped 5 (5 duplicate)" in said
    said = imported(files_app, str(write_csv(tmp_path / "once.csv", a)))
    assert "read 4 rows, imported 0, skipped 4 (4 duplicate)" in said
    assert activities(files_app) == expected(twice)


def test_rows_given_to_import_activities_without_a_key_are_keyed_by_content(
    files_app: Flask,
) -> None:
    """The same for rows handed to the API: a list regenerated with one more row adds it."""
    rows = [
        {
            "marker_id": K[0],
            "unit_id": K[1],
            "ip_address": K[2],
            "action": "assessing",
            "task_id": n + 1,
            "created_at": T + timedelta(minutes=5 * n),
        }
        for n in range(6)
    ]
    more = [*rows[:2], {**rows[0], "task_id": 99}, *rows[2:]]
    with files_app.app_context():
        assert tutor_times.import_activities(rows, source_key="lms").imported == 6
        again = tutor_times.import_activities(more, source_key="lms")
    assert (again.imported, again.skipped[DUPLICATE]) == (1, 6)


# -- item 7: memory bounded whatever the longest line ---------------------------------------

LOG = ROOT / "tests" / "data" / "ontrack-sample.log"
#: the line of the bomb: 500 MiB that gzip packs into about half a megabyte
BOMB_LINE = 500 * 2**20


def cli_env(app: Flask) -> dict[str, str]:
    """A `flask` process on the test's database (the demo, its hooks, no sweeper)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_TIMES_")}
    return {
        **env,
        "FLASK_APP": "wsgi",
        "DEMO_CONFIG": "development",
        "DATABASE_URL": str(app.config["SQLALCHEMY_DATABASE_URI"]),
        "TUTOR_TIMES_IN_PROCESS_SWEEPER": "false",
    }


def peak_of_import(app: Flask, *args: str) -> tuple[int, str]:
    """Run `flask tutor-times import` in a child process: its peak resident set (bytes, as
    the kernel counted it for that child alone) and its output."""
    command = [sys.executable, "-m", "flask", "tutor-times", "import", *args]
    with open(os.devnull, "rb") as stdin:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=cli_env(app),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * 1024  # Linux counts it in KiB
    assert proc.returncode == 0, f"peak {peak / 2**20:.0f} MiB: {output[-600:]}"
    return peak, output  # Linux counts it in KiB


def write_bomb(path: Path, lines: list[bytes], at: int) -> None:
    """``lines`` gzipped, with one line of BOMB_LINE bytes before line ``at``."""
    chunk = b"x" * 2**20
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.writelines(lines[:at])
        for _ in range(BOMB_LINE // len(chunk)):
            out.write(chunk)
        out.write(b"\n")
        out.writelines(lines[at:])


def test_a_line_over_the_limit_is_counted_and_the_rest_imported(
    files_app: Flask, tmp_path: Path
) -> None:
    """Plain too: the line over MAX_LINE is skipped as too long, the rows around it are
    imported; a line just under it is read (and is a malformed row)."""
    from tutor_times.history.rows import TOO_LONG
    from tutor_times.history.sources import MAX_LINE

    path = write_csv(tmp_path / "long.csv", [record(n) for n in range(6)])
    lines = path.read_bytes().splitlines(keepends=True)
    long_line = b"9" * (MAX_LINE + 10) + b"\n"
    under = b"," * (MAX_LINE // 2) + b"\n"
    path.write_bytes(b"".join([*lines[:3], long_line, under, *lines[3:]]))
    said = imported(files_app, str(path))
    assert f"read 8 rows, imported 6, skipped 2 (1 {MALFORMED}, 1 {TOO_LONG})" in said


# -- item 12: a bad row is counted, a bad file is named -------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:10:00+00:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59+00:00",
        "9999-12-31T23:59:59-14:00",
    ],
)
def test_a_time_at_the_calendars_ends_is_a_malformed_row(
    files_app: Flask, tmp_path: Path, bad: str
) -> None:
    """Year 1 passed the checks and overflowed when its session's window was computed."""
    rows = [record(n) for n in range(4)]
    rows.insert(2, [*rows[0][:5], 50, "", bad])
    said = imported(files_app, str(write_csv(tmp_path / "year1.csv", rows)))
    assert f"read 5 rows, imported 4, skipped 1 (1 {MALFORMED})" in said


def test_a_year_one_row_given_to_import_activities_is_counted(files_app: Flask) -> None:
    early = datetime.fromisoformat("0001-01-01T00:00:00+00:00")
    rows = [
        {
            "marker_id": K[0],
            "unit_id": K[1],
            "ip_address": K[2],
            "action": "assessing",
            "created_at": at,
            "import_key": n,
        }
        for n, at in enumerate([early, T])
    ]
    with files_app.app_context():
        report = tutor_times.import_activities(rows, source_key="early")
    assert (report.imported, report.skipped[MALFORMED]) == (1, 1)


def test_a_field_over_the_csv_limit_is_a_malformed_row(files_app: Flask, tmp_path: Path) -> None:
    """A 200,000-character field: csv raised its field-limit error out of the import."""
    rows = [record(n) for n in range(4)]
    rows.insert(1, [K[0], K[1], "1" * 200_000, "assessing", "", 1, "", T.isoformat()])
    said = imported(files_app, str(write_csv(tmp_path / "wide.csv", rows)))
    assert f"read 5 rows, imported 4, skipped 1 (1 {MALFORMED})" in said


def count_activities(app: Flask) -> int:
    with app.app_context():
        table = tutor_times.SessionActivity.__table__
        n = int(db.session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
        db.session.commit()
        return n


def test_a_file_with_the_gzip_magic_that_is_not_gzip_is_refused(
    files_app: Flask, tmp_path: Path
) -> None:
    path = tmp_path / "fake.csv.gz"
    path.write_bytes(b"\x1f\x8b" + b"marker_id,unit_id and not gzip at all\n" * 20)
    result = invoke(files_app, str(path))
    assert result.exit_code != 0
    assert "not a readable gzip file" in result.output and str(path) in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert count_activities(files_app) == 0


def test_a_truncated_gzip_imports_the_rows_before_the_cut_and_says_so(
    files_app: Flask, tmp_path: Path
) -> None:
    rows = [record(n, key=KEYS[n % len(KEYS)], minutes=1) for n in range(3000)]
    plain = write_csv(tmp_path / "whole.csv", rows).read_bytes()
    packed = gzip.compress(plain)
    cut = packed[: len(packed) // 2]
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(cut)
    whole_lines = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    result = invoke(files_app, str(path), "--batch-size", "500")
    assert result.exit_code != 0
    assert "Aborted!" not in result.output
    assert "cut short" in result.output and str(path) in result.output
    assert f"imported {whole_lines - 1}," in result.output
    assert count_activities(files_app) == whole_lines - 1  # every row before the cut


def test_rows_stored_by_another_import_after_they_were_checked_are_duplicates(
    files_app: Flask,
) -> None:
    """Two imports of one file at once: each checks a batch against the stored keys, then
    places it. When the other stored the same rows in between, the batch's rows are counted
    as duplicates (the second waits for the key's lock), never a unique violation."""
    rows = [
        {
            "marker_id": k[0],
            "unit_id": k[1],
            "ip_address": k[2],
            "action": "assessing",
            "task_id": n + 1,
            "created_at": T + timedelta(minutes=n),
        }
        for n, k in enumerate(KEYS * 5)
    ]
    with files_app.app_context():
        importer = tutor_times.importer()
        checked = list(importer._checked(rows, "same", ImportReport()))
        with importer.store.connect() as conn:
            batch = importer._admissible(conn, checked, Counter())
        assert len(batch) == len(rows)
        other = tutor_times.import_activities(rows[::2], source_key="same")  # in between
        assert other.imported == len(rows[::2])
        with importer.store.connect() as conn:
            dropped = importer.placer.place(conn, batch, importer.clock)
    assert dropped == len(rows[::2])
    assert count_activities(files_app) == len(rows)


# -- after a bulk import, PostgreSQL's planner statistics are fresh --------------------------


def analyze_counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            sa.text(
                "SELECT relname, analyze_count FROM pg_stat_user_tables"
                " WHERE relname IN ('marking_sessions', 'session_activities',"
                " 'tutor_times_assessed', 'tutor_times_tutor_months')"
            )
        ).all()
        db.session.commit()
    return {r[0]: int(r[1]) for r in rows}


@pytest.mark.real
def test_a_bulk_import_analyzes_the_tables_it_filled(tmp_path: Path, clock: Clock) -> None:
    """ANALYZE (counted apart from autovacuum's) ran on each table the import filled once
    it imported ANALYZE_AFTER rows or more; a small import leaves it to autovacuum."""
    from tutor_times.history.importer import ANALYZE_AFTER

    for app in build("postgres"):
        before = analyze_counts(app)
        small = [record(n, minutes=3) for n in range(10)]
        imported(app, str(write_csv(tmp_path / "small.csv", small)))
        assert analyze_counts(app) == before
        rows = [
            record(10_000 + n, key=KEYS[n % len(KEYS)], minutes=1) for n in range(ANALYZE_AFTER)
        ]
        said = imported(app, str(write_csv(tmp_path / "bulk.csv", rows)))
        assert f"imported {ANALYZE_AFTER}," in said
        after = analyze_counts(app)
        assert len(after) == 4
        assert all(after[t] == before[t] + 1 for t in after), (before, after)


# -- rows an earlier version keyed by line --------------------------------------------------


def test_rows_imported_under_line_keys_are_found_by_content(
    files_app: Flask, tmp_path: Path
) -> None:
    """A file imported before rows were keyed by content is stored under its line keys
    (``csv:<digest of its first 8 lines>:<line>``, tt0005's column). Importing it again, or
    an edited copy, keys those activities by what they say first: the file adds nothing, the
    copy adds its new row, and a row the old import stored twice stays two (no loss)."""
    from tutor_times.history.sources import line_keyed_identity

    a = [record(n) for n in range(10)]
    a_path = write_csv(tmp_path / "A.csv", [*a, a[4]])
    line_source = line_keyed_identity(str(a_path), "csv")
    assert line_source is not None and line_source.startswith("csv:")
    as_before = [  # what the earlier version stored: a row per line, keyed by the line
        {
            "marker_id": r[0],
            "unit_id": r[1],
            "ip_address": r[2],
            "action": r[3],
            "task_id": r[5],
            "created_at": datetime.fromisoformat(r[7]),
            "import_key": line,
        }
        for line, r in enumerate([*a, a[4]], start=2)
    ]
    with files_app.app_context():
        assert tutor_times.import_activities(as_before, source_key=line_source).imported == 11
    said = imported(files_app, str(a_path))
    assert "read 11 rows, imported 0, skipped 11 (11 duplicate)" in said
    b = a[:7] + [record(100, minutes=1)] + a[7:]
    said = imported(files_app, str(write_csv(tmp_path / "B.csv", b)))
    assert "read 11 rows, imported 1, skipped 10 (10 duplicate)" in said
    assert activities(files_app) == expected([*b, a[4]])
    keys = [x.import_key for x in stored(files_app, tutor_times.SessionActivity)]
    assert not [k for k in keys if k.startswith(line_source)]
