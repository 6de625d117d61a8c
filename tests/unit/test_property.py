"""The tests of ``integration/test_property.py`` that need no app and no database."""

from __future__ import annotations

from datetime import timedelta

from ..conftest import T0
from ..integration.test_property import KEYS, TIMEOUT, reference


def test_the_reference_itself() -> None:
    """The oracle is checked by hand on a known stream, so it cannot drift unnoticed."""
    k = KEYS[0]
    stream = [
        ("act", k, T0),
        ("act", k, T0 + timedelta(minutes=14)),
        ("act", k, T0 + timedelta(minutes=13)),  # late, joins
        ("act", k, T0 + timedelta(minutes=29)),  # exactly TIMEOUT after 14: new
        ("sweep", T0 + timedelta(minutes=44)),
        ("act", k, T0 + timedelta(minutes=43)),  # late, joins the second
        ("act", k, T0 + timedelta(minutes=60)),  # 17 minutes later: new
        ("act", k, T0 + timedelta(minutes=45, seconds=30)),  # late: bridges the two
        ("act", k, T0 + timedelta(minutes=90)),  # new
    ]
    assert reference(stream, TIMEOUT) == [
        (k, T0, T0 + timedelta(minutes=14), 14, 3),
        (k, T0 + timedelta(minutes=29), T0 + timedelta(minutes=60), 31, 4),
        (k, T0 + timedelta(minutes=90), T0 + timedelta(minutes=90), 1, 1),
    ]
