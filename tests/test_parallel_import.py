"""Batches placed on several connections at once (PostgreSQL): each connection takes its own
tutors' keys, and the sessions are still exactly R2's runs of every key's activities."""

from __future__ import annotations

from pathlib import Path

import pytest

from tutor_times.history import importer as history

from .conftest import Clock, build
from .test_history import stored_sessions
from .test_import_cli import run_import, write_history
from .test_property import TIMEOUT, reference


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("placers", [1, 2, 3])
def test_batches_split_by_tutor_place_as_one_connection_would(
    tmp_path: Path, clock: Clock, placers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two files of the same weeks (so the second merges into, bridges and extends the
    first's sessions), each in batches large enough to be split between connections."""
    monkeypatch.setattr(history, "PLACERS", placers)
    monkeypatch.setattr(history, "SPLIT_AT", 100)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    stream = write_history(first, 3000, seed=1) + write_history(second, 3000, seed=2)
    for app in build("postgres"):
        assert "imported 3000," in run_import(app, str(first), "--batch-size", "1500")
        assert "imported 3000," in run_import(app, str(second), "--batch-size", "1000")
        assert stored_sessions(app) == reference(stream, TIMEOUT)
