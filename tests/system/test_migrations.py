"""The tests of ``integration/test_migrations.py`` that start servers or processes of their own."""

from __future__ import annotations

import re

import pytest

from ..databases import foreign_keys
from ..integration.test_migrations import TRACKED_FKS, Host, branch_head, revision_of
from ..integration.test_migrations import empty_database as empty_database  # noqa: F401  (a fixture)
from ..integration.test_migrations import host as host  # noqa: F401  (a fixture)


@pytest.mark.system
def test_a_new_project(host: Host) -> None:
    """docs/user/database.md, "A new project": tracking tables first, then the host's own first revision,
    which also adds the foreign keys to the tables it creates."""
    host.flask("db", "init")
    host.flask("db", "upgrade", "heads")
    assert foreign_keys(host.url, "marking_sessions") == set()  # users and units do not exist yet
    host.flask("db", "migrate", "-m", "users and units")
    [first] = host.revisions
    assert revision_of(first)[1] == "None"  # a root of the host's own, not on tutor_times
    # it adds foreign keys to marking_sessions, so it must run after the branch created it
    depends_on = re.search(r"^depends_on = (.*)$", first.read_text(), re.M)
    assert depends_on and f"'{branch_head()}'" in depends_on.group(1), first.read_text()
    host.flask("db", "upgrade", "heads")
    assert foreign_keys(host.url, "marking_sessions") == TRACKED_FKS

    host.flask("db", "migrate", "-m", "unit terms", step=2)
    second = next(p for p in host.revisions if p != first)
    assert revision_of(second)[1] == f"'{revision_of(first)[0]}'"
    host.flask("db", "upgrade", "heads", step=2)
    assert "term" in host.columns("units")
    assert "No changes in schema detected" in host.flask("db", "migrate", step=2)
    assert len(host.revisions) == 2


@pytest.mark.system
def test_an_existing_project(host: Host) -> None:
    """docs/user/database.md, "An existing project": its tables exist, so the branch adds the foreign keys
    itself, and the host's next revision continues the host's own line."""
    host.flask("db", "init", with_tutor_times=False)
    host.flask("db", "migrate", "-m", "users and units", with_tutor_times=False)
    host.flask("db", "upgrade", with_tutor_times=False)
    [first] = host.revisions

    host.flask("db", "upgrade", "heads")
    assert foreign_keys(host.url, "marking_sessions") == TRACKED_FKS
    host.flask("db", "migrate", "-m", "unit terms", step=2)
    second = next(p for p in host.revisions if p != first)
    assert revision_of(second)[1] == f"'{revision_of(first)[0]}'"
    host.flask("db", "upgrade", "heads", step=2)
    assert "term" in host.columns("units")
    heads = host.flask("db", "heads", step=2)
    assert revision_of(second)[0] in heads and branch_head() in heads

    host.flask("db", "revision", "-m", "a data fix by hand", step=2)
    [third] = [p for p in host.revisions if p not in (first, second)]
    assert revision_of(third)[1] == f"'{revision_of(second)[0]}'"
