"""The tests of ``integration/test_privacy.py`` that need no app and no database."""

from __future__ import annotations

import pytest

from tutor_times.core.privacy import truncate


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:abcd:1234::1", "2001:db8:abcd::/48"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),  # IPv4-mapped: its IPv4 network
        ("::1", "::/48"),
    ],
)
def test_truncate(ip: str, network: str) -> None:
    assert truncate(ip) == network
