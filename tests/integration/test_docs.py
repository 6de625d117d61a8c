"""The documentation checked against the code: every example request of the HTTP API page
replayed on the golden scenario (the response shown is the response the endpoint gives); the
configuration page lists every setting the code reads; the rendered OpenAPI document lists
every endpoint the app serves; every example of the quick-start and integration pages runs;
the README stays a door to the site."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy

from demo import create_app
from demo.extensions import db, tutor_times
from demo.scenario import NOW
from tutor_times.core.constants import DEFAULTS, ConfigVars

from ..conftest import REDIS_URL, Clock, built, login, play_scenario, require_real_services

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
HTTP_PAGE = DOCS / "reference" / "http.md"
CLASS_TIMES_PAGE = DOCS / "user" / "class-times.md"
RELIABILITY_PAGE = DOCS / "design" / "reliability.md"
HOST = "http://127.0.0.1:5000"
# a curl command block followed by the response block it shows
EXAMPLE = re.compile(r"```sh\n(curl [^`]*?)\n```\n```(json|csv)\n(.*?)\n```", re.S)


def examples() -> list[tuple[str, str, str]]:
    section = HTTP_PAGE.read_text()
    return [(m[1], m[2], m[3]) for m in EXAMPLE.finditer(section)]


def url_of(args: list[str]) -> str:
    return next(a for a in args if a.startswith(HOST)).removeprefix(HOST)


def replay(app: Flask, command: str) -> Any:
    """Run one curl command of the docs on the test client: (user from the jar, method, URL, body)."""
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


@pytest.mark.parametrize("loaded_by", ["scenario_sqlite", "seed_demo_example"])
@pytest.mark.parametrize(("command", "kind", "shown"), examples())
def test_each_http_example_is_what_the_endpoint_answers(
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
    """The OnTrack-style CSV of the class-times page, with the classes it names."""
    section = CLASS_TIMES_PAGE.read_text()
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
    """A new demo database filled by ``flask seed-demo --example``, as the HTTP page says."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'example.sqlite'}")
    with app.app_context():
        db.create_all()
    runner = app.test_cli_runner()
    loaded = runner.invoke(args=["seed-demo", "--example"])
    assert loaded.exit_code == 0, loaded.output
    assert "loaded the documentation's example sessions" in loaded.output
    again = runner.invoke(args=["seed-demo", "--example"])
    assert again.exit_code != 0 and "no tracked sessions yet" in again.output
    clock.set(NOW)
    yield app
    with app.app_context():
        db.engine.dispose()


# -- pages made from the code: the settings and the OpenAPI document -------------------------


def docs_extension() -> Any:
    """docs/_ext/tutor_times_docs.py, the Sphinx extension that writes the generated pages."""
    spec = importlib.util.spec_from_file_location(
        "tutor_times_docs", DOCS / "_ext" / "tutor_times_docs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keys_in_the_code() -> set[str]:
    """Every ``TUTOR_TIMES_*`` name the package's source spells out, and every ConfigVars value."""
    found = {
        key
        for path in (ROOT / "tutor_times").rglob("*.py")
        for key in re.findall(r"\bTUTOR_TIMES_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    return found | {v for k, v in vars(ConfigVars).items() if not k.startswith("_")}


def test_every_setting_in_the_code_is_on_the_configuration_page() -> None:
    page = "\n".join(docs_extension().settings_rst())
    assert "tutor-times-settings" in (DOCS / "user" / "configuration.md").read_text()
    for key in keys_in_the_code():
        assert f".. confval:: {key}\n" in page, f"{key} is read by the code but not documented"
        assert key in DEFAULTS, f"{key} has no default in DEFAULTS"
    for key, default in DEFAULTS.items():
        entry = page.split(f".. confval:: {key}\n", 1)[1].split(".. confval::", 1)[0]
        assert f":default: ``{docs_extension().default_text(default)}``" in entry, key
        meaning = entry.split("\n\n", 1)[1].split("In code:", 1)[0]
        assert len(meaning.split()) >= 3, f"{key} has no meaning on the page"


def test_a_setting_without_a_meaning_fails_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key added to ConfigVars without its ``#:`` comment stops the build, naming it."""
    monkeypatch.setattr(ConfigVars, "NEW_SETTING", "TUTOR_TIMES_NEW_SETTING", raising=False)
    with pytest.raises(ValueError, match="TUTOR_TIMES_NEW_SETTING"):
        docs_extension().settings_rst()


#: the blueprint's HTML pages and files, which are not part of the JSON API
NOT_JSON = {"tutor_times.static", "tutor_times.unit_dashboard", "tutor_times.my_dashboard"}


def served_endpoints(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every rule the extension's blueprint adds to the app."""
    prefix = app.config["TUTOR_TIMES_URL_PREFIX"]
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("tutor_times.") or rule.endpoint in NOT_JSON:
            continue
        assert rule.rule.startswith(prefix), rule
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    return served


def test_every_endpoint_of_the_app_is_in_the_rendered_openapi() -> None:
    ext = docs_extension()
    document, _ = ext.demo_openapi()
    page = "\n".join(ext.openapi_rst(document))
    app = create_app("testing")
    try:
        served = served_endpoints(app)
        assert len(served) >= 11
        for method, path in served:
            assert method.lower() in document["paths"].get(path, {}), (method, path)
            assert f"``{method} {path}``" in page, f"{method} {path} is not on the OpenAPI page"
        html = {rule.endpoint for rule in app.url_map.iter_rules()} & NOT_JSON
        assert html == NOT_JSON, "a page named here is gone: update NOT_JSON"
    finally:
        with app.app_context():
            db.engine.dispose()


# -- the integration page's example, and the README's, run on a small host -------------------


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", page.read_text(), re.S)


@contextmanager
def small_host(tmp_path: Path, store: str) -> Iterator[tuple[Flask, SQLAlchemy, dict[str, Any]]]:
    """An OnTrack-like host with the five tables the examples use, not yet mounted."""
    host_db = SQLAlchemy()

    class User(UserMixin, host_db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id = sa.Column(sa.Integer, primary_key=True)

    class Unit(host_db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "units"
        id = sa.Column(sa.Integer, primary_key=True)

    class UnitRole(host_db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "unit_roles"
        id = sa.Column(sa.Integer, primary_key=True)
        user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id"))
        unit_id = sa.Column(sa.Integer, sa.ForeignKey("units.id"))
        role = sa.Column(sa.String(20))

    class Project(host_db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "projects"
        id = sa.Column(sa.Integer, primary_key=True)
        user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id"))

    class Task(host_db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "tasks"
        id = sa.Column(sa.Integer, primary_key=True)
        project_id = sa.Column(sa.Integer, sa.ForeignKey("projects.id"))
        task_definition_id = sa.Column(sa.Integer)
        status = sa.Column(sa.String(30))

    app = Flask("host")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'host.sqlite'}",
        SECRET_KEY=os.urandom(32),
        TUTOR_TIMES_REDIS_PREFIX=f"tt-docs-{uuid.uuid4().hex[:8]}",
    )
    host_db.init_app(app)
    login_manager = LoginManager(app)
    login_manager.user_loader(lambda user_id: host_db.session.get(User, int(user_id)))

    @app.post("/login/<int:user_id>")
    def log_in(user_id: int) -> Any:
        login_user(host_db.session.get(User, user_id))
        return "", 204

    names: dict[str, Any] = {
        "app": app,
        "db": host_db,
        "UnitRole": UnitRole,
        "Project": Project,
        "Task": Task,
    }
    try:
        yield app, host_db, names
    finally:
        if "tutor_times" in names:
            with app.app_context():
                names["tutor_times"].dispose()
        with app.app_context():
            host_db.engine.dispose()


def run_example(code: str, store: str, names: dict[str, Any]) -> None:
    """The example as written; with the Redis store, on this test run's Redis server."""
    line = 'app.config["TUTOR_TIMES_REDIS_URL"] = "redis://127.0.0.1:6379/0"'
    assert line in code, "the example shows where the Redis server is set"
    if store == "redis":
        code = code.replace("redis://127.0.0.1:6379/0", REDIS_URL)
    else:  # the embedded store: the line left out, as its comment says
        code = "\n".join(c for c in code.splitlines() if not c.startswith(line))
    exec(compile(code, "<example>", "exec"), names)


STORES = [
    pytest.param("embedded", id="embedded"),
    pytest.param("redis", id="redis", marks=pytest.mark.real),
]


HOST_ROWS = [
    "INSERT INTO users (id) VALUES (3), (7)",
    "INSERT INTO units (id) VALUES (1)",
    "INSERT INTO unit_roles (user_id, unit_id, role) VALUES (3, 1, 'tutor'), (7, 1, 'student')",
    "INSERT INTO projects (id, user_id) VALUES (1, 7), (2, 3)",
    "INSERT INTO tasks (id, project_id, task_definition_id, status)"
    " VALUES (1, 1, 5, 'ready'), (2, 1, 6, 'ready'), (3, 2, 5, 'ready')",
]


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("page", ["docs/user/integrating.md", "README.md"])
def test_the_integration_examples_run(
    tmp_path: Path, store: str, page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page's first example mounts the extension and tracks a view: a tutor's PUT is
    recorded, a student's is not, nor (where the example says ``when=``) a tutor's own
    project. Each later example then runs in the same host, in order."""
    if store == "redis":
        require_real_services()
    first, *more = python_blocks(ROOT / page)
    assert "@tutor_times.track(" in first
    with small_host(tmp_path, store) as (app, host_db, names):
        run_example(first, store, names)
        tracker = names["tutor_times"]
        with app.app_context():
            host_db.create_all()
            for row in HOST_ROWS:
                host_db.session.execute(sa.text(row))
            host_db.session.commit()
        tutor, student = app.test_client(), app.test_client()
        assert tutor.post("/login/3").status_code == 204
        assert student.post("/login/7").status_code == 204
        answer = tutor.put("/units/1/projects/1/tasks/1", json={"status": "complete"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert student.put("/units/1/projects/1/tasks/2", json={"status": "x"}).status_code == 200
        own = tutor.put("/units/1/projects/2/tasks/3", json={"status": "complete"})
        assert own.status_code == 200
        with app.app_context():
            rows = host_db.session.scalars(sa.select(tracker.SessionActivity)).all()
            tracked = [(a.action, a.task_id) for a in rows]
            assert tracked == (
                [("assessing", 1)] if "when=" in first else [("assessing", 1), ("assessing", 3)]
            )
            session = host_db.session.get(tracker.MarkingSession, rows[0].marking_session_id)
            assert session is not None
            assert (session.marker_id, session.unit_id) == (3, 1)
            if "task_definition_id=" in first:
                assert rows[0].task_definition_id == 5
        capsys.readouterr()
        for code in more:
            exec(compile(code, "<example>", "exec"), names)
        if page.endswith("integrating.md"):
            printed = capsys.readouterr().out.split()
            assert printed[1:] == ["action"], printed
            with app.app_context():
                made = host_db.session.get(tracker.MarkingSession, int(printed[0]))
                assert made is not None
                assert (made.marker_id, made.unit_id, made.ip_address) == (3, 1, "10.0.0.1")
                count = host_db.session.scalar(
                    sa.select(sa.func.count()).select_from(tracker.SessionActivity)
                )
                assert count == len(tracked) + 1


def test_the_readme_is_a_door_to_the_site() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert "make run" in text and "make test" in text and "make docs" in text
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert "docs/index.md" in links
    for link in links:
        assert (ROOT / link).exists(), link
    (example,) = [c for c in python_blocks(README) if "@tutor_times.track(" in c]
    assert len(example.splitlines()) <= 20


# -- the quick start, run as a reader runs it ------------------------------------------------

QUICKSTART = DOCS / "user" / "quickstart.md"
#: a fenced block: its language (sh, json, or none for plain output) and its text
BLOCK = re.compile(r"^```(\w*)\n(.*?)\n```$", re.S | re.M)


def quickstart_steps() -> list[tuple[str, str | None, str | None]]:
    """(shell block, the language of the output shown right after it, that output)."""
    text = QUICKSTART.read_text()
    blocks = list(BLOCK.finditer(text))
    steps: list[tuple[str, str | None, str | None]] = []
    for i, block in enumerate(blocks):
        if block[1] != "sh":
            continue
        after = blocks[i + 1] if i + 1 < len(blocks) else None
        if after is not None and after[1] != "sh" and after.start() == block.end() + 1:
            steps.append((block[2], after[1], after[2]))
        else:
            steps.append((block[2], None, None))
    return steps


def same_shape(answer: Any, shown: Any) -> bool:
    """The same keys all the way down (times and ids differ from run to run)."""
    if isinstance(shown, dict):
        return (
            isinstance(answer, dict)
            and answer.keys() == shown.keys()
            and all(same_shape(answer[k], v) for k, v in shown.items())
        )
    if isinstance(shown, list):
        return isinstance(answer, list) and bool(answer) and same_shape(answer[0], shown[0])
    return type(answer) is type(shown)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert proc.poll() is None, "make run stopped"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"make run did not serve on {port}")


def test_the_architecture_page_names_every_module() -> None:
    """A module added to the package gets its row in the architecture page's table."""
    page = (DOCS / "design" / "architecture.md").read_text()
    package = ROOT / "tutor_times"
    for path in sorted(package.rglob("*.py")):
        if path.name != "__init__.py" and "migrations" not in path.parts:
            name = path.relative_to(package).as_posix()
            assert f"`{name}`" in page, f"{name} is not on the architecture page"


def test_every_metric_is_on_the_monitoring_page() -> None:
    """Each metric the package defines has its row in the metrics table and a panel."""
    from tutor_times.core import metrics

    page = (DOCS / "operations" / "monitoring.md").read_text()
    table, panels = page.split("### Scraping", 1)[0], page.split("### A dashboard", 1)[1]
    names = {
        value._name  # the metric's name, without the _total a counter is exposed with
        for value in vars(metrics).values()
        if hasattr(value, "_name") and hasattr(value, "_type")
    }
    assert len(names) >= 10, names
    for name in names:
        exposed = f"{name}_total" if f"`{name}_total`" in table else name
        assert f"| `{exposed}` |" in table, f"{name} is not in the metrics table"
        assert name in panels, f"{name} has no panel"


def test_the_layer_map_is_the_import_contract() -> None:
    """The page's map is the contract lint-imports checks, and it places every module."""
    ext = docs_extension()
    layers = ext.layer_contract()
    assert layers[0] == ["tutor_times.extension"] and layers[-1] == ["tutor_times.core"]
    page = "\n".join(ext.layers_rst())
    package = Path(__file__).resolve().parents[2] / "tutor_times"
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if "migrations" in parts or parts[-1] == "__init__" and len(parts) == 2:
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module != "tutor_times":
            assert f"``{module}``" in page, module
