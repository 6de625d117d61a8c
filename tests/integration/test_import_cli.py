"""`flask tutor-times import`: files of history, plain or gzipped, streamed in batches; run
again, or resumed after a kill -9, nothing is added twice."""

from __future__ import annotations

import csv
import gzip
import json
import random
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times
from tutor_times.history.rows import DUPLICATE
from tutor_times.store.models import IMPORT_KEY_LENGTH

from ..conftest import BACKENDS, Clock, build
from .test_history import stored_sessions
from .test_property import KEYS, TIMEOUT, reference

DATA = Path(__file__).resolve().parents[1] / "data"
LOG = DATA / "ontrack-sample.log"
TRUTH = DATA / "ontrack-sample.expected.csv"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def import_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def truth_stream(path: Path = TRUTH) -> list[tuple[Any, ...]]:
    """The activities a file holds, as the independent sessionizer takes them."""
    with open(path, newline="") as f:
        return [
            (
                "act",
                (int(r["marker_id"]), int(r["unit_id"]), r["ip_address"]),
                datetime.fromisoformat(r["created_at"]),
            )
            for r in csv.DictReader(f)
        ]


def run_import(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["tutor-times", "import", *args])
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def test_the_sample_log_imports_as_the_activities_it_holds(import_app: Flask) -> None:
    expected = json.loads((DATA / "ontrack-sample.expected.json").read_text())
    skipped = expected["skipped"]
    first = run_import(import_app, str(LOG), "--format", "ontrack-log", "--batch-size", "50")
    assert f"read {expected['read']} rows, imported {expected['imported']}," in first
    for reason, count in skipped.items():
        assert f"{count} {reason}" in first
    assert stored_sessions(import_app) == reference(truth_stream(), TIMEOUT)
    again = run_import(import_app, str(LOG), "--format", "ontrack-log")
    assert f"imported 0, skipped {expected['read']}" in again
    assert f"{expected['imported']} {DUPLICATE}" in again
    assert stored_sessions(import_app) == reference(truth_stream(), TIMEOUT)


def test_a_gzipped_csv_and_the_same_csv_plain_are_one_source(
    import_app: Flask, tmp_path: Path
) -> None:
    packed = tmp_path / "history.csv.gz"
    with open(TRUTH, "rb") as plain, gzip.open(packed, "wb") as out:
        shutil.copyfileobj(plain, out)
    first = run_import(import_app, str(packed))
    assert "skipped 0" in first
    assert stored_sessions(import_app) == reference(truth_stream(), TIMEOUT)
    # gzipped or not, its rows say the same: nothing is added
    assert "imported 0" in run_import(import_app, str(TRUTH))
    assert stored_sessions(import_app) == reference(truth_stream(), TIMEOUT)


def test_a_dry_run_reports_and_writes_nothing(import_app: Flask) -> None:
    out = run_import(import_app, str(LOG), "--format", "ontrack-log", "--dry-run")
    imported = json.loads((DATA / "ontrack-sample.expected.json").read_text())["imported"]
    assert f"would import {imported}," in out
    assert stored_sessions(import_app) == []


def test_a_log_import_needs_both_hooks(import_app: Flask) -> None:
    resolvers = tutor_times._log_path_resolver, tutor_times._username_resolver
    tutor_times._username_resolver = None
    try:
        result = import_app.test_cli_runner().invoke(
            args=["tutor-times", "import", str(LOG), "--format", "ontrack-log"]
        )
    finally:
        tutor_times._log_path_resolver, tutor_times._username_resolver = resolvers
    assert result.exit_code != 0 and "@tutor_times.username_resolver" in result.output


def test_a_csv_without_its_columns_is_refused(import_app: Flask, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("marker_id,unit_id\n3,1\n")
    result = import_app.test_cli_runner().invoke(args=["tutor-times", "import", str(bad)])
    assert result.exit_code != 0 and "lacks the columns" in result.output


# -- kill -9 in the middle of a file, then run it again ------------------------------------


def write_history(path: Path, rows: int, seed: int = 14) -> list[tuple[Any, ...]]:
    """A CSV of random activities of the demo's keys in 2025; the stream it holds."""
    rnd = random.Random(seed)
    t = datetime.fromisoformat("2025-02-03T08:00:00+00:00")
    stream = []
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "marker_id",
                "unit_id",
                "ip_address",
                "action",
                "project_id",
                "task_id",
                "task_definition_id",
                "created_at",
            ]
        )
        for _ in range(rows):
            t += timedelta(seconds=rnd.choice([5, 60, 400, 899, 900, 3000]))
            key = rnd.choice(KEYS)
            writer.writerow([key[0], key[1], key[2], "assessing", "", "", "", t.isoformat()])
            stream.append(("act", key, t))
    return stream


def imported_count(app: Flask) -> int:
    with app.app_context():
        table = tutor_times.SessionActivity.__table__
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_a_csv_with_an_import_key_column_is_keyed_by_it(import_app: Flask, tmp_path: Path) -> None:
    """Two exports of the same activities, in different files and orders: the rows' own keys
    make them one source."""
    with open(TRUTH, newline="") as f:
        records = list(csv.DictReader(f))[:30]
    for name, rows in (("a.csv", records), ("b.csv", list(reversed(records)))):
        with open(tmp_path / name, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["import_key", *records[0]])
            writer.writeheader()
            writer.writerows(
                {"import_key": f"act-{r['created_at']}-{r['marker_id']}", **r} for r in rows
            )
    assert "imported 30," in run_import(import_app, str(tmp_path / "a.csv"))
    assert "imported 0, skipped 30 (30 duplicate)" in run_import(
        import_app, str(tmp_path / "b.csv")
    )


def test_a_csv_row_whose_own_key_is_too_long_is_a_malformed_line(
    import_app: Flask, tmp_path: Path
) -> None:
    """An ``import_key`` column over the column's length is that row's fault: it is counted
    as a malformed line, and the rest of the file is imported."""
    with open(TRUTH, newline="") as f:
        records = list(csv.DictReader(f))[:10]
    with open(tmp_path / "long.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["import_key", *records[0]])
        writer.writeheader()
        for n, r in enumerate(records):
            key = "k" * (IMPORT_KEY_LENGTH + 1) if n == 3 else f"row-{n}"
            writer.writerow({"import_key": key, **r})
    said = run_import(import_app, str(tmp_path / "long.csv"))
    assert "imported 9, skipped 1 (1 malformed line)" in said


def test_a_source_key_too_long_for_any_row_is_refused_before_reading(import_app: Flask) -> None:
    with import_app.app_context(), pytest.raises(ValueError, match="at most 200 characters"):
        tutor_times.import_activities([], source_key="s" * IMPORT_KEY_LENGTH)
