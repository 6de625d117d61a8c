"""The rooms' import contract (``[importlinter:*]`` in setup.cfg) holds on the package, and
catches what it forbids: a copy of the package with one import added breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("importlinter", reason="import-linter is a dev dependency (make install)")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_with(tmp_path: Path, module: str, line: str) -> Path:
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    shutil.copytree(
        ROOT / "tutor_times", tmp_path / "tutor_times", ignore=shutil.ignore_patterns("__pycache__")
    )
    path = tmp_path / "tutor_times" / f"{module.replace('.', '/')}.py"
    path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path


def test_the_package_keeps_its_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a store reaching up into a report
        ("store.figures", "from ..reports import whatif", "Each room imports only the rooms below"),
        # one step importing a sibling step: reports into the closer, as they once did
        (
            "reports.whatif",
            "from ..closing.closer import sweep",
            "The steps of the flow never import each other",
        ),
        # the rules taking on a database
        ("core.accounting", "import sqlalchemy", "The rules need no Flask, SQL or Redis"),
        # pydantic outside the web layer
        ("app.settings", "import pydantic", "Only the web layer speaks HTTP's schemas"),
    ],
)
def test_a_forbidden_import_breaks_it(tmp_path: Path, module: str, line: str, broken: str) -> None:
    done = lint_imports(copy_with(tmp_path, module, line))
    assert done.returncode != 0
    report = done.stdout.split("Broken contracts", 1)[-1]
    assert broken in report, done.stdout
    assert f"tutor_times.{module}" in report


def test_an_import_for_types_only_is_no_edge(tmp_path: Path) -> None:
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..extension import X"
    done = lint_imports(copy_with(tmp_path, "tracking.tracker", typed))
    assert done.returncode == 0, done.stdout
