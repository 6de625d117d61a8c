"""The tests of ``integration/test_import_files.py`` that start servers or processes of their own."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from tutor_times.history.rows import DUPLICATE
from tutor_times.store.sql_store import key_hash

from ..conftest import Clock, build
from ..integration.test_import_files import (
    BOMB_LINE,
    LOG,
    ROOT,
    K,
    activities,
    cli_env,
    count_activities,
    expected,
    peak_of_import,
    record,
    write_bomb,
    write_csv,
)
from ..integration.test_import_files import files_app as files_app  # noqa: F401  (a fixture)


@pytest.mark.system
@pytest.mark.parametrize("fmt", ["csv", "ontrack-log"])
def test_a_gzip_bomb_of_one_line_is_skipped_in_bounded_memory(
    files_app: Flask, tmp_path: Path, fmt: str
) -> None:
    """A 500 MiB line in a gzip of about half a megabyte: the line is counted as too long
    and never held whole; the import's peak memory stays within a bound of the same file
    without it (before, it peaked over 1 GB)."""
    from tutor_times.history.rows import TOO_LONG
    from tutor_times.history.sources import MAX_LINE

    if fmt == "csv":
        plain = write_csv(tmp_path / "plain.csv", [record(n) for n in range(10)])
    else:
        plain = LOG
    lines = plain.read_bytes().splitlines(keepends=True)
    small, bomb = tmp_path / f"small.{fmt}.gz", tmp_path / f"bomb.{fmt}.gz"
    with gzip.open(small, "wb") as out:
        out.writelines(lines)
    write_bomb(bomb, lines, at=6)
    assert bomb.stat().st_size < 4 * 2**20 and BOMB_LINE > 100 * MAX_LINE
    base, said = peak_of_import(files_app, str(small), "--format", fmt, "--dry-run")
    peak, bombed = peak_of_import(files_app, str(bomb), "--format", fmt, "--dry-run")
    read = int(said.split("read ")[1].split(" rows")[0])
    assert f"read {read + 1} rows," in bombed and f"1 {TOO_LONG}" in bombed
    assert (
        said.split(", skipped")[0].split("would import")[1]
        == (bombed.split(", skipped")[0].split("would import")[1])
    )
    assert peak < base + 64 * 2**20, (peak, base)


@pytest.mark.real
@pytest.mark.system
def test_two_imports_of_one_file_at_once(tmp_path: Path, clock: Clock) -> None:
    """Two `flask tutor-times import` processes of one file, both past their duplicate check
    and waiting on the key's lock when it is let go: both finish, every row is stored once,
    and what one imported the other counts as duplicate."""
    rows = [record(n, minutes=2) for n in range(200)]
    path = write_csv(tmp_path / "same.csv", rows)
    for app in build("postgres"):
        engine = sa.create_engine(str(app.config["SQLALCHEMY_DATABASE_URI"]))
        with engine.connect() as holder, engine.connect() as watcher:
            holder.execute(sa.select(sa.func.pg_advisory_lock(key_hash(K))))
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "flask", "tutor-times", "import", str(path)],
                    cwd=ROOT,
                    env=cli_env(app),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
                for _ in range(2)
            ]
            waiting = sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            deadline = time.monotonic() + 60
            while watcher.execute(waiting).scalar_one() < 2:
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
                watcher.rollback()
                time.sleep(0.05)
            holder.execute(sa.select(sa.func.pg_advisory_unlock(key_hash(K))))
            holder.commit()
            outputs = [p.communicate(timeout=60)[0] for p in procs]
        engine.dispose()
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert not any("Traceback" in o or "UniqueViolation" in o for o in outputs)
        took = sorted(int(o.split("imported ")[1].split(",")[0]) for o in outputs)
        dupes = sorted(
            int(o.split(f" {DUPLICATE}")[0].rsplit("(", 1)[-1]) if DUPLICATE in o else 0
            for o in outputs
        )
        assert sum(took) == len(rows) and sum(dupes) == len(rows), outputs
        assert count_activities(app) == len(rows)
        assert activities(app) == expected(rows)
