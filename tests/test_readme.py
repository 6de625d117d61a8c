"""Every example request in the README's report section, replayed on the golden scenario:
the response shown there is the response the endpoint gives."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from demo import create_app
from demo.extensions import db, tutor_times
from demo.scenario import NOW
from tutor_times.constants import DEFAULTS

from .conftest import Clock, built, login, play_scenario

README = Path(__file__).resolve().parent.parent / "README.md"
HOST = "http://127.0.0.1:5000"
# a curl command block followed by the response block it shows
EXAMPLE = re.compile(r"```sh\n(curl [^`]*?)\n```\n```(json|csv)\n(.*?)\n```", re.S)


def examples() -> list[tuple[str, str, str]]:
    section = README.read_text().split("### Report endpoints", 1)[1].split("\n## ", 1)[0]
    return [(m[1], m[2], m[3]) for m in EXAMPLE.finditer(section)]


def url_of(args: list[str]) -> str:
    return next(a for a in args if a.startswith(HOST)).removeprefix(HOST)


def replay(app: Flask, command: str) -> Any:
    """Run one README curl command on the test client: (user from the jar, method, URL, body)."""
    args = shlex.split(command.replace("\\\n", " "))
    jar = args[args.index("-b") + 1] if "-b" in args else None
    method = args[args.index("-X") + 1] if "-X" in args else "GET"
    body = args[args.index("-d") + 1] if "-d" in args else None
    url = url_of(args)
    client = login(app, jar.removesuffix(".jar")) if jar else app.test_client()
    return client.open(
        url,
        method=method,
        data=body,
        content_type="application/json" if body else None,
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )


def test_the_readme_shows_every_endpoint() -> None:
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


@pytest.mark.parametrize("loaded_by", ["scenario_sqlite", "seed_demo_example"])
@pytest.mark.parametrize(("command", "kind", "shown"), examples())
def test_each_readme_example_is_what_the_endpoint_answers(
    request: pytest.FixtureRequest, loaded_by: str, command: str, kind: str, shown: str
) -> None:
    r = replay(request.getfixturevalue(loaded_by), command)
    if kind == "csv":
        assert r.get_data(as_text=True).lstrip("\ufeff").replace("\r\n", "\n").strip() == shown
        return
    answer = r.get_json()
    expected = json.loads(shown)
    if command.endswith("openapi.json"):  # the document is long: its opening is shown
        answer = {key: answer[key] for key in expected}
    assert answer == expected, json.dumps(answer, indent=2)


def test_the_class_times_example_is_what_the_endpoint_answers(scenario_sqlite: Flask) -> None:
    """The OnTrack-style CSV in "Class times and workload", with the classes it names."""
    section = README.read_text().split("### Class times and workload", 1)[1].split("\n### ", 1)[0]
    found = re.search(r"```sh\n(curl [^`]*?ontrack[^`]*?)\n```\n```text\n(.*?)\n```", section, re.S)
    assert found, "the class times section shows a curl command and its CSV"
    command, shown = found.groups()
    assert "tutor1 (id 3) in a class from 09:10 to 09:40" in section
    assert "workshop of every tutor from midnight to 01:00" in section

    def classes(unit_id: int, start: datetime, end: datetime) -> list[Any]:
        utc = timezone.utc
        return [
            (3, datetime(2026, 3, 2, 9, 10, tzinfo=utc), datetime(2026, 3, 2, 9, 40, tzinfo=utc)),
            (None, datetime(2026, 3, 3, 0, 0, tzinfo=utc), datetime(2026, 3, 3, 1, 0, tzinfo=utc)),
        ]

    tutor_times.class_times_loader(classes)
    try:
        r = replay(scenario_sqlite, command)
    finally:
        tutor_times.forget_workload_loaders()
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_data(as_text=True).lstrip("\ufeff").replace("\r\n", "\n").strip() == shown


@pytest.fixture
def scenario_sqlite(clock: Clock) -> Iterator[Flask]:
    with built("sqlite") as app:
        play_scenario(app, clock)
        yield app


@pytest.fixture
def seed_demo_example(clock: Clock, tmp_path: Path) -> Iterator[Flask]:
    """A new demo database filled by ``flask seed-demo --example``, as the README says."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'example.sqlite'}")
    with app.app_context():
        db.create_all()
    runner = app.test_cli_runner()
    loaded = runner.invoke(args=["seed-demo", "--example"])
    assert loaded.exit_code == 0, loaded.output
    assert "loaded the README's example sessions" in loaded.output
    again = runner.invoke(args=["seed-demo", "--example"])
    assert again.exit_code != 0 and "no tracked sessions yet" in again.output
    clock.set(NOW)
    yield app
    with app.app_context():
        db.engine.dispose()


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.read_text().split("### Configuration", 1)[1].split("\n#", 1)[0]
    for key, default in DEFAULTS.items():
        assert f"| `{key}` |" in table, key
        if isinstance(default, (int, float, str)) and not isinstance(default, bool):
            assert f"| `{key}` | `{default!r}`".replace("'", '"') in table, key


def test_every_reliability_row_names_tests_that_exist() -> None:
    table = README.read_text().split("## Reliability", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "test" in line]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    assert len(rows) >= 12 and len(named) >= len(rows) - 1
    for path, name in named:
        source = (README.parent / path).read_text()
        assert f"def {name}(" in source, f"{path}::{name}"
