"""The shipped migrations build exactly the schema the models declare, and a host project,
new or existing, can follow the database page's path with the real ``flask db`` commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from demo import create_app
from demo.extensions import db, tutor_times
from tutor_times.migrations import VERSIONS_DIR
from tutor_times.store import class_store, figures, tallies
from tutor_times.store.models import UPKEEPS, UTCDateTime

from ..conftest import BACKENDS, tally_tables
from ..databases import scratch_database

HOST_APP = Path(__file__).resolve().parents[1] / "host_app.py"
FLASK = str(Path(sys.executable).with_name("flask"))
TRACKED_FKS = {("marker_id", "users"), ("unit_id", "units")}


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "migrations") as url:
        yield url


def test_migrations_match_the_models(empty_database: str) -> None:
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=empty_database)
    with app.app_context():
        upgrade(revision="demo@head")
        upgrade(revision="heads")
        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), db.metadata)
            inspector = sa.inspect(conn)
            fks = {fk["referred_table"] for fk in inspector.get_foreign_keys("marking_sessions")}
            indexes = {ix["name"] for ix in inspector.get_indexes("marking_sessions")}
            covered = {
                ix["name"]: ix.get("dialect_options", {}).get("postgresql_include", [])
                for ix in inspector.get_indexes("session_activities")
            }["ix_session_activities_session_created"]
        assert diffs == []
        if conn.dialect.name == "postgresql":
            assert covered == ["action", "task_id", "task_definition_id"]
            # the tallies' functions and triggers are those the package creates today
            with db.engine.connect() as conn:
                migrated = tally_code(conn)
                for upkeep in UPKEEPS:
                    for statement in tallies.drop_statements(upkeep) + tallies.create_statements(
                        upkeep
                    ):
                        conn.execute(sa.text(statement))
                declared = tally_code(conn)
                conn.rollback()
            assert migrated == declared
            # each module's four triggers and their functions, and its own two functions
            assert len(migrated) == 2 * (2 * 4 + 2)
        assert fks == {"users", "units"}
        assert "uq_marking_sessions_open_key" in indexes

        downgrade(revision="tutor_times@base")
        with db.engine.connect() as conn:
            assert not sa.inspect(conn).has_table("marking_sessions")
        db.engine.dispose()


def schema_state() -> tuple[set[str], list[tuple[str, str]]]:
    """The app's database's tables, and on PostgreSQL the tallies' functions' code."""
    with db.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        code = tally_code(conn) if conn.dialect.name == "postgresql" else []
    return tables, code


def test_downgrading_tt0010_puts_back_what_tt0009_left(empty_database: str) -> None:
    """tt0010 replaces the tallies' function (and adds two tables); its downgrade takes the
    tables away and puts back the functions as tt0008 made them (PostgreSQL)."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=empty_database)

    with app.app_context():
        upgrade(revision="demo@head")
        upgrade(revision="tt0009")
        before = schema_state()
        upgrade(revision="tt0010")
        after = schema_state()
        downgrade(revision="tt0009")
        again = schema_state()
        downgrade(revision="tutor_times@base")
        db.engine.dispose()
    assert {"tutor_times_assessed_months", "tutor_times_assessed_totals"} <= after[0] - before[0]
    assert again == before
    if after[1]:
        assert after[1] != before[1]


def test_tt0011_made_the_class_tables_the_store_declares(empty_database: str) -> None:
    """tt0011's frozen copy of the stored split's tables is what ``class_store.tables``
    declares today: the same columns, primary keys and indexes (PostgreSQL's INCLUDE columns
    too), made beside the migrated ones in a schema of their own and compared there."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=empty_database)
    with app.app_context():
        upgrade(revision="demo@head")
        upgrade(revision="tt0011")
        with db.engine.connect() as conn:
            migrated = class_tables(conn, None)
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("CREATE SCHEMA declared"))
            else:
                conn.exec_driver_sql("ATTACH DATABASE ':memory:' AS declared")
            metadata = sa.MetaData(schema="declared")
            class_store.tables(metadata, UTCDateTime)
            metadata.create_all(conn)
            declared = class_tables(conn, "declared")
            conn.rollback()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DETACH DATABASE declared")
        downgrade(revision="tutor_times@base")
        db.engine.dispose()
    assert [name for name, *_ in migrated] == [class_store.MONTHS, class_store.BLOCKS]
    assert migrated == declared


def class_tables(conn: sa.Connection, schema: str | None) -> list[tuple[Any, ...]]:
    """The stored split's tables in ``schema`` (None: the default): each one's name, columns
    (name, type, nullable, default), primary key, and how each of its indexes is made
    (PostgreSQL's definition, the schema's name taken out; SQLite's statement)."""
    inspector = sa.inspect(conn)
    out = []
    for name in (class_store.MONTHS, class_store.BLOCKS):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], c["default"])
            for c in inspector.get_columns(name, schema)
        ]
        key = inspector.get_pk_constraint(name, schema)
        if conn.dialect.name == "postgresql":
            made = conn.execute(
                sa.text(
                    "SELECT replace(pg_get_indexdef(i.indexrelid), n.nspname || '.', '')"
                    " FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid"
                    " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                    " WHERE c.relname = :name AND n.nspname = coalesce(:schema, current_schema())"
                    " ORDER BY 1"
                ),
                {"name": name, "schema": schema},
            ).scalars()
        else:
            made = conn.execute(
                sa.text(
                    f"SELECT sql FROM {schema or 'main'}.sqlite_master"
                    " WHERE tbl_name = :name ORDER BY name"
                ),
                {"name": name},
            ).scalars()
        out.append((name, columns, key["constrained_columns"], key["name"], list(made)))
    return out


def test_tt0012_versions_each_rolled_month_and_its_downgrade_puts_back_tt0011(
    empty_database: str,
) -> None:
    """tt0012 gives each month the summary's roll-up holds a version of its own (PostgreSQL),
    and replaces the roll-up's function by one that keeps them; its downgrade takes its
    tables away and puts back the functions as tt0009 made them."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=empty_database)
    rolled = [(1, date(2026, 3, 1), 3), (1, date(2026, 3, 1), 4), (1, date(2026, 4, 1), 3)]
    rolled += [(2, date(2026, 3, 1), 3)]

    with app.app_context():
        upgrade(revision="demo@head")
        upgrade(revision="tt0011")
        postgres = db.engine.dialect.name == "postgresql"
        if postgres:
            with db.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO tutor_times_tutor_months (unit_id, month, marker_id,"
                        " sessions, assessments, uncounted, credited)"
                        " VALUES (:unit, :month, :marker, 1, 0, 0, '{1,2,3,4,5,6,7,8,9,10}')"
                    ),
                    [{"unit": u, "month": m, "marker": k} for u, m, k in rolled],
                )
        before = schema_state()
        upgrade(revision="tt0012")
        after = schema_state()
        with db.engine.connect() as conn:
            versions = conn.execute(
                sa.text("SELECT unit_id, month, version FROM tutor_times_month_versions")
            ).all()
        downgrade(revision="tt0011")
        again = schema_state()
        downgrade(revision="tutor_times@base")
        db.engine.dispose()
    assert {"tutor_times_month_versions", "tutor_times_class_checked"} <= after[0] - before[0]
    assert again == before
    if postgres:
        assert after[1] != before[1]
        assert sorted((u, m) for u, m, _ in versions) == sorted({(u, m) for u, m, _ in rolled})
        assert len({v for *_, v in versions}) == len(versions)
    else:
        assert versions == []


def tally_code(conn: sa.Connection) -> list[tuple[str, str]]:
    """The tallies' functions (name, body) and triggers (name, definition) in a database."""
    return [
        tuple(row)
        for row in conn.execute(
            sa.text(
                "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'tutor_times_%'"
                " UNION ALL SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE tgname LIKE 'tutor_times_%' ORDER BY 1, 2"
            )
        )
    ]


class Host:
    """A host project in a folder of its own, driven by the ``flask`` command."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.url = url
        shutil.copy(HOST_APP, folder / "host.py")

    def flask(self, *args: str, with_tutor_times: bool = True, step: int = 1) -> str:
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "WITH_TUTOR_TIMES": "1" if with_tutor_times else "0",
            "HOST_STEP": str(step),
        }
        done = subprocess.run(
            [FLASK, "--app", "host", *args],
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"flask {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    @property
    def revisions(self) -> list[Path]:
        return sorted((self.folder / "migrations" / "versions").glob("*.py"))

    def columns(self, table: str) -> set[str]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return {c["name"] for c in sa.inspect(conn).get_columns(table)}
        finally:
            engine.dispose()


def package_revisions() -> list[str]:
    return sorted(p.name for p in Path(VERSIONS_DIR).glob("*.py"))


def branch_head() -> str:
    """The tutor_times branch's last revision, whichever release this is."""
    revisions = [revision_of(p) for p in Path(VERSIONS_DIR).glob("*.py")]
    downs = {down.strip("'\"") for _, down in revisions}
    [head] = [rev for rev, _ in revisions if rev not in downs]
    return head


@pytest.fixture
def host(empty_database: str, tmp_path: Path) -> Iterator[Host]:
    before = package_revisions()
    folder = tmp_path / "host"
    folder.mkdir()
    yield Host(folder, empty_database)
    stray = sorted(set(package_revisions()) - set(before))
    for name in stray:  # never leave a host's revision in the package, even when a test failed
        Path(VERSIONS_DIR, name).unlink()
    assert stray == [], f"host revisions written into the package: {stray}"


def revision_of(path: Path) -> tuple[str, str]:
    text = path.read_text()
    revision = re.search(r"^revision = ['\"](\w+)['\"]", text, re.M)
    down = re.search(r"^down_revision = (.*)$", text, re.M)
    assert revision and down, text
    return revision.group(1), down.group(1)


def test_upgrading_computes_the_figures_of_stored_sessions(empty_database: str) -> None:
    """Sessions stored before tt0006 — overlapping ones of one tutor (R10), whose ends fall
    a microsecond either side of a whole minute, with assessments of tasks (some without a
    task) among other actions — get the figures the writers keep."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=empty_database)
    t0 = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    spans = [(0, 30), (10, 45), (45, 60), (120, 121)]  # minutes after t0
    with app.app_context():
        upgrade(revision="demo@head")
        upgrade(revision="tt0005")
        with db.engine.begin() as conn:
            conn.execute(
                tutor_times_table("users")
                .insert()
                .values(id=3, username="t", name="T", password_hash="-", is_admin=False)
            )
            conn.execute(tutor_times_table("units").insert().values(id=1, code="U1", name="U"))
            for i, (a, b) in enumerate(spans):
                start = t0 + timedelta(minutes=a)
                end = t0 + timedelta(minutes=b, microseconds=1 if i % 2 else -1)
                values = {
                    "id": i + 1,
                    "marker_id": 3,
                    "unit_id": 1,
                    "ip_address": f"10.0.0.{i % 2}",
                    "start_time": start,
                    "end_time": end,
                    "duration_minutes": max(1, b - a - 1),
                    "created_at": start,
                    "updated_at": end,
                }
                conn.execute(tutor_times_table("marking_sessions").insert().values(values))
                for k, action in enumerate(["assessing", "inbox", "assessing"][: i + 1]):
                    at = start + timedelta(seconds=k)
                    conn.execute(
                        tutor_times_table("session_activities")
                        .insert()
                        .values(
                            marking_session_id=i + 1,
                            action=action,
                            task_definition_id=None if k == 2 else 10 + i,
                            task_id=None if i == 3 else 100 + i + k,
                            created_at=at,
                            updated_at=at,
                            source="server",
                        )
                    )
        upgrade(revision="heads")
        models = tutor_times.models
        kept_tables = tally_tables(models)
        with db.engine.connect() as conn:
            upgraded = figure_rows(conn, models)
            # the fills of the tasks report's tallies (tt0008, tt0010) and of the summary's
            # months (tt0009), on PostgreSQL
            filled = [conn.execute(sa.select(t).order_by(*t.c)).all() for t in kept_tables]
            conn.execute(
                sa.update(models.MarkingSession.__table__).values(dict.fromkeys(figures.FIGURES))
            )
            figures.refresh(conn, models, [figures.Touch(1, 3, t0, t0 + timedelta(hours=3))])
            walked = figure_rows(conn, models)
            kept = [conn.execute(sa.select(t).order_by(*t.c)).all() for t in kept_tables]
            conn.rollback()
        assert upgraded == walked
        # and the triggers' upkeep of the figures written again
        assert filled == kept
        assert bool(filled[0]) == (conn.dialect.name == "postgresql")
        # the first three are one block of 60 minutes less a microsecond, the last its own
        minutes = figures.FIGURES.index("block_minutes")
        assert [r[minutes] for r in upgraded] == [59, None, None, 1]
        listed = [figures.FIGURES.index(n) for n in ("assessed_definitions", "assessed_tasks")]
        assert [[r[i] for i in listed] for r in upgraded] == [
            [[10], [100]],
            [[11], [101]],
            [[12, None], [102, 104]],
            [[13, None], [None, None]],
        ]
        downgrade(revision="tutor_times@base")


def tutor_times_table(name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=db.engine)


def figure_rows(conn: sa.Connection, models: Any) -> list[tuple[Any, ...]]:
    ms = models.MarkingSession
    columns = [getattr(ms, name) for name in figures.FIGURES]
    return [tuple(r) for r in conn.execute(sa.select(*columns).order_by(ms.id))]
