"""Databases of a test's own: a SQLite file, or a PostgreSQL database created and dropped
next to the configured test database (its name extended, so it is recognisably the suite's)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from .conftest import PG_URL, require_real_services


@contextlib.contextmanager
def scratch_database(backend: str, folder: Path, purpose: str) -> Iterator[str]:
    """The URL of an empty database on ``backend``; a PostgreSQL one is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{purpose}.sqlite'}"
        return
    require_real_services()
    base = sa.make_url(PG_URL)
    name = f"{base.database}_{purpose}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def foreign_keys(url: str, table: str) -> set[tuple[str, str]]:
    """(column, referred table) of each foreign key of ``table``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                (fk["constrained_columns"][0], fk["referred_table"])
                for fk in sa.inspect(conn).get_foreign_keys(table)
            }
    finally:
        engine.dispose()
