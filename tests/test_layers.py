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
    "core.errors": 0,
    "core.constants": 0,
    "core.accounting": 0,
    "store.class_times": 1,
    "store.class_store": 2,
    "core.privacy": 1,
    "store.models": 3,
    "store.figures": 4,
    "app.settings": 4,
    "store.activity": 4,
    "store.drivers": 4,
    "store.redis_cache": 5,
    "store.sql_store": 5,
    "tracking.tracker": 6,
    "closing.closer": 6,
    "closing.retention": 6,
    "reports.read_models": 6,
    "history.importer": 6,
    "history.rebuild": 6,
    "tracking.decorator": 7,
    "app.hooks": 7,
    "reports.whatif": 7,
    "history.sources": 7,
    "history.ontrack_log": 8,
    "history.ontrack_db": 8,
    "closing.worker": 7,
    "store.idempotency": 6,
    "store.jobs": 6,
    "core.metrics": 0,
    "store.tallies": 0,
    "store.rollups": 0,
    "app.health": 8,
    "app.state": 7,
    "app.maintenance": 8,
    "app.services": 9,
    "extension": 16,
    "app.cli": 10,
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
    "core": 0,
    "store": 0,
    "tracking": 0,
    "closing": 0,
    "reports": 0,
    "history": 0,
    "app": 0,
}
#: imports that wire the package together at run time, in a function body on purpose
WIRING: set[tuple[str, str]] = set()


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
    source = "from ..closing.closer import last_activity_of\nfrom ..store.models import Models\n"
    assert backward_imports("reports.read_models", source) == [
        "reports.read_models:1 imports closing.closer (layer 6 >= 6)"
    ]
    # a store importing the tracker, and the web layer's plumbing importing its schemas
    assert backward_imports("store.sql_store", "from ..tracking.tracker import Tracker\n")
    assert backward_imports("web.api", "from . import schemas\n")
    # what type checking alone needs is no edge of the flow
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..extension import X\n"
    assert backward_imports("tracking.decorator", typed) == []
