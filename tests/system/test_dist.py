"""The package as users get it: built into a wheel, installed (not editable) into a venv of
its own, and used there by a host project, away from this source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from ..conftest import BACKENDS
from ..databases import foreign_keys, scratch_database

pytestmark = [pytest.mark.system]

ROOT = Path(__file__).resolve().parents[2]
HOST_APP = Path(__file__).resolve().parents[1] / "host_app.py"
SHIPPED = ["setup.cfg", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"]
# Files of the kinds the package will carry, planted in the copy: the patterns must take them.
PLANTED = [
    "tutor_times/lua/probe.lua",
    "tutor_times/templates/tt/probe.html",
    "tutor_times/static/css/probe.css",
]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{output}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built as ``make dist`` builds it, from a copy of what the sdist ships."""
    source = tmp_path_factory.mktemp("source")
    for name in SHIPPED:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "tutor_times", source / "tutor_times", ignore=shutil.ignore_patterns("__pycache__")
    )
    for planted in PLANTED:
        (source / planted).parent.mkdir(parents=True, exist_ok=True)
        (source / planted).write_text("-- planted by the test\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = source / "dist"
    log = run(
        sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ".", cwd=source, env=env
    )
    warnings = [line for line in log.splitlines() if "warn" in line.lower()]
    assert warnings == [], "\n".join(warnings)
    [built] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    assert sdist.name == "tutor_times-0.1.0.tar.gz"
    return built


def test_the_wheel_holds_every_file_the_package_needs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for revision in Path(ROOT, "tutor_times/migrations/versions").glob("*.py"):
        assert f"tutor_times/migrations/versions/{revision.name}" in names
    assert {"tutor_times/py.typed", *PLANTED} <= names
    web = Path(ROOT, "tutor_times/web")
    dashboard = [*(web / "templates").rglob("*.html"), *(web / "static").rglob("*.*")]
    assert len(dashboard) >= 4
    for asset in dashboard:
        assert str(asset.relative_to(ROOT)) in names, asset
    assert "tutor_times-0.1.0.dist-info/licenses/LICENSE" in names
    assert not any("__pycache__" in n or n.startswith(("tests/", "demo/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed and, for its dependencies, this venv's site-packages
    on its path (no network, no editable finder: a .pth line adds a path, runs nothing)."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=venv,
    )
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv
        ).strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = run(python, "-c", "import tutor_times; print(tutor_times.__file__)", cwd=venv).strip()
    assert Path(where).is_relative_to(site), where
    return python


TRACKED_REQUEST = textwrap.dedent(
    """
    import sqlalchemy as sa
    from host import create_app, db, User, Unit

    app = create_app()
    with app.app_context():
        db.session.add_all([User(id=1, name="Tom"), Unit(id=1, code="COS10001")])
        db.session.commit()
    client = app.test_client()
    assert client.post("/login/1").status_code == 204
    r = client.put("/units/1/tasks/7")
    assert r.status_code == 200, r.data
    page = client.get("/tutor-times/units/1/dashboard?tz=UTC")
    assert page.status_code == 200 and b"tt-calendar" in page.data, page.data[:500]
    assert client.get("/tutor-times/static/dashboard.js").status_code == 200
    with app.app_context():
        rows = db.session.execute(sa.text(
            "SELECT s.marker_id, s.unit_id, a.action, a.task_id FROM session_activities a"
            " JOIN marking_sessions s ON s.id = a.marking_session_id")).all()
    print([tuple(row) for row in rows])
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_host_uses_the_installed_wheel(installed: Path, tmp_path: Path, backend: str) -> None:
    folder = tmp_path / "host"
    folder.mkdir()
    shutil.copy(HOST_APP, folder / "host.py")
    (folder / "track.py").write_text(TRACKED_REQUEST)
    with scratch_database(backend, tmp_path, "wheel") as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "WITH_TUTOR_TIMES": "1",
            "PYTHONPATH": str(folder),
        }
        env.pop("PYTHONSAFEPATH", None)

        def flask(*args: str) -> str:
            return run(installed, "-m", "flask", "--app", "host", *args, cwd=folder, env=env)

        flask("db", "init")
        flask("db", "upgrade", "heads")
        flask("db", "migrate", "-m", "users and units")
        flask("db", "upgrade", "heads")
        assert foreign_keys(url, "marking_sessions") == {
            ("marker_id", "users"),
            ("unit_id", "units"),
        }
        out = run(installed, "track.py", cwd=folder, env=env)
        assert out.strip().splitlines()[-1] == "[(1, 1, 'assessing', 7)]"
