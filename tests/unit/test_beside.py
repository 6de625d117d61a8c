"""The tests of ``integration/test_beside.py`` that need no app and no database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tutor_times.web.beside import read_snapshot


def test_a_snapshot_id_is_checked_before_it_is_written_into_sql() -> None:
    with sa.create_engine("sqlite://").connect() as conn, pytest.raises(ValueError, match="snap"):
        read_snapshot(conn, "1'; DROP TABLE marking_sessions; --")
