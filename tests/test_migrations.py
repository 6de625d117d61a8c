"""The shipped migrations build exactly the schema the models declare."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from demo import create_app
from demo.extensions import db

from .conftest import BACKENDS, PG_URL, require_real_services


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite'}"
        return
    require_real_services()
    name = f"tt_migrations_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.make_url(PG_URL).set(database=name))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
        assert fks == {"users", "units"}
        assert "uq_marking_sessions_open_key" in indexes

        downgrade(revision="tutor_times@base")
        with db.engine.connect() as conn:
            assert not sa.inspect(conn).has_table("marking_sessions")
        db.engine.dispose()
