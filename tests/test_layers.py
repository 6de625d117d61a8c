"""Imports follow the data flow: a module imports only modules of lower layers.

decorator → tracker → session cache / SQL store → models → closing and worker → reports →
web. Models and the foundations are what every step stands on; no step reaches back into a
later one (reports never import the closer, stores never import the tracker), and only the
extension's wiring and the web layer sit on top. Imports made only for type checking, and
the extension's registering of its CLI and blueprint inside ``init_app``, are not edges of
the flow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tutor_times"

#: the layer of each module: a module may import modules of strictly lower layers only
LAYERS: dict[str, int] = {
    "errors": 0,
    "constants": 0,
    "accounting": 0,
    "class_times": 1,
    "class_store": 2,
    "privacy": 1,
    "models": 3,
    "figures": 4,
    "settings": 4,
    "activity": 4,
    "drivers": 4,
    "redis_cache": 5,
    "sql_store": 5,
    "tracker": 6,
    "closer": 6,
    "retention": 6,
    "reports": 6,
    "history": 6,
    "rebuild": 6,
    "decorator": 7,
    "hooks": 7,
    "whatif": 7,
    "sources": 7,
    "ontrack_log": 8,
    "ontrack_db": 8,
    "worker": 7,
    "idempotency": 6,
    "jobs": 6,
    "metrics": 0,
    "tallies": 0,
    "rollups": 0,
    "health": 8,
    "state": 7,
    "maintenance": 8,
    "extension": 9,
    "cli": 10,
    "web.api": 10,
    "web.ranges": 11,
    "web.csv_export": 11,
    "web.calendar": 11,
    "web.beside": 11,
    "web.html": 12,
    "web.schemas": 12,
    "web.views": 13,
    "web.dashboard": 14,
    "web": 15,
}
#: imports that wire the package together at run time, in a function body on purpose
WIRING = {("extension", "cli"), ("extension", "web")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _target(module: str, node: ast.ImportFrom, alias: str | None) -> str | None:
    """The package module an ``from … import …`` names, relative to ``module``."""
    if node.level == 0:
        if node.module is None or not node.module.startswith("tutor_times"):
            return None
        name = node.module.removeprefix("tutor_times").lstrip(".")
    else:
        base = module.split(".")
        is_package = (PACKAGE / Path(*base) / "__init__.py").exists() if module else True
        anchor = base if is_package else base[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
        name = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
    if alias is not None and f"{name}.{alias}".strip(".") in LAYERS:
        return f"{name}.{alias}".strip(".")
    return name or None


def imports_of(module: str, source: str) -> list[tuple[str, int]]:
    """(imported package module, line) of every run-time import in ``source``."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            target = _target(module, node, alias.name)
            if target:
                found.append((target, node.lineno))
    return found


def backward_imports(module: str, source: str) -> list[str]:
    problems = []
    layer = LAYERS[module]
    for target, line in imports_of(module, source):
        while target not in LAYERS and "." in target:
            target = target.rsplit(".", 1)[0]
        if target not in LAYERS or (module, target) in WIRING:
            continue
        if LAYERS[target] >= layer and target != module:
            problems.append(f"{module}:{line} imports {target} (layer {LAYERS[target]} >= {layer})")
    return problems


def package_modules() -> list[Path]:
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in p.parts and module_name(p) != ""
    ]


def test_every_module_has_a_layer() -> None:
    assert {module_name(p) for p in package_modules()} == set(LAYERS)


@pytest.mark.parametrize("path", package_modules(), ids=module_name)
def test_imports_point_down_the_flow(path: Path) -> None:
    assert backward_imports(module_name(path), path.read_text()) == []


def test_a_backward_import_is_caught() -> None:
    """The check itself: reports reaching back into the closer, as they once did."""
    source = "from .closer import last_activity_of\nfrom .models import Models\n"
    assert backward_imports("reports", source) == ["reports:1 imports closer (layer 6 >= 6)"]
    # a store importing the tracker, and the web layer's plumbing importing its schemas
    assert backward_imports("sql_store", "from .tracker import Tracker\n")
    assert backward_imports("web.api", "from . import schemas\n")
    # what type checking alone needs is no edge of the flow
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .extension import X\n"
    assert backward_imports("decorator", typed) == []
