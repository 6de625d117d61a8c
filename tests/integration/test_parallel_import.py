"""Batches placed on several connections at once (PostgreSQL): each connection takes its own
tutors' keys, and the sessions are still exactly R2's runs of every key's activities."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutor_times.history import importer as history

from ..conftest import T0, Clock, build
from . import test_import_cli
from .test_history import stored_sessions
from .test_import_cli import run_import, write_history
from .test_property import KEYS, TIMEOUT, reference


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


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("placers", [2, 4])
def test_a_batch_of_one_unit_is_split_by_tutor_and_placed_as_one_connection_would(
    tmp_path: Path, clock: Clock, placers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One unit's keys only: the batch is cut by tutor, and the connections that share the
    unit's tally lock take turns."""
    monkeypatch.setattr(history, "PLACERS", placers)
    monkeypatch.setattr(history, "SPLIT_AT", 100)
    one_unit = [k for k in KEYS if k[1] == 1]
    monkeypatch.setattr(test_import_cli, "KEYS", one_unit)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    stream = write_history(first, 2000, seed=3) + write_history(second, 2000, seed=4)
    assert {key[1] for _, key, _ in stream} == {1}
    for app in build("postgres"):
        assert "imported 2000," in run_import(app, str(first), "--batch-size", "700")
        assert "imported 2000," in run_import(app, str(second), "--batch-size", "900")
        assert stored_sessions(app) == reference(stream, TIMEOUT)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.integers(1, 5)).map(lambda mu: (*mu, "10.0.0.1")),
        max_size=60,
    ),
    st.integers(1, 5),
)
def test_parts_hold_every_row_once_and_share_no_unit_or_tutor(
    keys: list[tuple[int, int, str]], n: int
) -> None:
    batch: list[Any] = [
        (*key, T0, "inbox", None, None, None, f"k{i}") for i, key in enumerate(keys)
    ]
    cut = history.parts(batch, n)
    assert len(cut) == n
    assert sorted(p[8] for part in cut for p in part) == sorted(p[8] for p in batch)
    units = [{p[1] for p in part} for part in cut]
    tutors = [{(p[0], p[1]) for p in part} for part in cut]
    for i in range(n):
        for j in range(i):
            assert not tutors[i] & tutors[j]
            if len({p[1] for p in batch}) > 1:
                assert not units[i] & units[j]
    # whole units, the largest first into the part with the fewest rows: every part holds
    # one when there are enough, and no part outgrows another by more than a unit's rows
    per_unit = Counter(p[1] for p in batch)
    if len(per_unit) >= n:
        assert all(cut)
    if len(per_unit) > 1:
        sizes = [len(part) for part in cut]
        assert max(sizes) - min(sizes) <= max(per_unit.values())
