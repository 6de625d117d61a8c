"""The tests of ``integration/test_docs.py`` that need no app and no database."""

from __future__ import annotations

import re
import shlex

from ..integration.test_docs import DOCS, RELIABILITY_PAGE, ROOT, docs_extension, examples, url_of


def test_the_http_page_shows_every_endpoint() -> None:
    shown = {re.sub(r"\?.*", "", url_of(shlex.split(c))) for c, _, _ in examples()}
    assert {re.sub(r"/\d+", "/N", path) for path in shown} >= {
        "/tutor-times/units/N/active",
        "/tutor-times/units/N/sessions",
        "/tutor-times/units/N/summary",
        "/tutor-times/units/N/tasks",
        "/tutor-times/units/N/timeline",
        "/tutor-times/sessions/N",
        "/tutor-times/me/sessions",
        "/tutor-times/activities",
        "/tutor-times/openapi.json",
    }


def test_every_reliability_row_names_tests_that_exist() -> None:
    table = RELIABILITY_PAGE.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "test" in line]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    assert len(rows) >= 12 and len(named) >= len(rows) - 1
    for path, name in named:
        source = (ROOT / path).read_text()
        assert f"def {name}(" in source, f"{path}::{name}"


def test_every_rule_has_an_anchor_and_citations_find_it() -> None:
    rules = (DOCS / "rules.md").read_text()
    for n in range(1, 13):
        assert f"(r{n})=\n## R{n} — " in rules, f"R{n} has no anchor"
    found = docs_extension().RULE.findall("R1, R2–R4, R10 and R12; not R13 nor PR2")
    assert found == ["1", "2", "4", "10", "12"]
