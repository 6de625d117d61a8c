"""Pages of this documentation that are made from the code at build time, so they cannot drift.

- ``.. tutor-times-settings::`` lists every ``TUTOR_TIMES_*`` key of
  :class:`tutor_times.ConfigVars` with its default from :data:`tutor_times.core.constants.DEFAULTS`
  and its meaning from the ``#:`` comment on its attribute.
- ``.. tutor-times-openapi::`` builds the demo app, asks it for ``<prefix>/openapi.json`` and
  renders every operation, its parameters and answers, and the whole document.
- ``.. tutor-times-layers::`` is the layer map of the package's import contract
  (``tests/test_layers.py``), each module with the opening of its docstring.
- Every citation of a rule (``R1`` … ``R12``) in running text links to its anchor on the rules
  page (``rules.md`` gives each rule the label ``r1`` … ``r12``), and every setting's name
  written as code links to its entry on the configuration page.

The functions that make the text (:func:`settings_rst`, :func:`openapi_rst`) need no Sphinx
application, so the tests can check what the pages will say.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from pygments.lexers.special import TextLexer
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms import SphinxTransform
from sphinx.util.docutils import SphinxDirective

#: a citation of one rule; "R1" to "R12", not inside a longer word
RULE = re.compile(r"\bR(1[0-2]|[1-9])\b")
#: where a rule's citation is left as it is: code, links, headings and the like
NO_RULE_LINKS = (
    nodes.literal,
    nodes.literal_block,
    nodes.reference,
    nodes.target,
    nodes.title,
    nodes.raw,
    nodes.image,
    addnodes.pending_xref,
    addnodes.desc_signature,
    addnodes.toctree,
)
HTTP_METHODS = ("get", "put", "post", "patch", "delete")


# -- settings ---------------------------------------------------------------------------------


def setting_docs() -> dict[str, tuple[str, list[str]]]:
    """``{key: (attribute name, meaning lines)}`` for every attribute of ``ConfigVars``."""
    from tutor_times.core.constants import ConfigVars

    analyzer = ModuleAnalyzer.for_module("tutor_times.core.constants")
    comments = analyzer.find_attr_docs()
    found: dict[str, tuple[str, list[str]]] = {}
    for name, key in vars(ConfigVars).items():
        if name.startswith("_") or not isinstance(key, str):
            continue
        lines = [line for line in comments.get(("ConfigVars", name), []) if line.strip()]
        if not lines:
            raise ValueError(f"ConfigVars.{name} ({key}) has no #: comment saying what it means")
        found[key] = (name, lines)
    return found


def default_text(value: Any) -> str:
    """A default as a host writes it in its config."""
    if isinstance(value, tuple):
        return "(" + ", ".join(repr(v) for v in value) + ")"
    return repr(value)


def settings_rst() -> list[str]:
    """The configuration reference: a table of every key and default, then each key's entry."""
    from tutor_times.core.constants import DEFAULTS

    docs = setting_docs()
    missing = set(DEFAULTS) ^ set(docs)
    if missing:
        raise ValueError(f"keys in DEFAULTS or ConfigVars but not in both: {sorted(missing)}")
    out = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 45 55",
        "",
        "   * - key",
        "     - default",
    ]
    for key in docs:
        out += [f"   * - :confval:`{key}`", f"     - ``{default_text(DEFAULTS[key])}``"]
    out.append("")
    for key, (name, lines) in docs.items():
        out += [
            f".. confval:: {key}",
            f"   :default: ``{default_text(DEFAULTS[key])}``",
            "",
            *(f"   {line}" for line in lines),
            "",
            f"   In code: :attr:`tutor_times.ConfigVars.{name}`.",
            "",
        ]
    return out


# -- OpenAPI ----------------------------------------------------------------------------------


def demo_openapi() -> tuple[dict[str, Any], str]:
    """The demo app's OpenAPI document, as ``GET <prefix>/openapi.json`` answers it."""
    from demo import create_app
    from demo.extensions import db

    app = create_app("testing")
    prefix = app.config["TUTOR_TIMES_URL_PREFIX"]
    try:
        answer = app.test_client().get(f"{prefix}/openapi.json")
        if answer.status_code != 200:
            raise RuntimeError(f"{prefix}/openapi.json answered {answer.status_code}")
        return answer.get_json(), prefix
    finally:
        with app.app_context():
            db.engine.dispose()


def _schema_text(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f":ref:`{name} <openapi-{name.lower()}>`"
    if "anyOf" in schema:
        return " or ".join(_schema_text(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_text(schema.get('items', {}))}"
    kind = str(schema.get("type", "any"))
    if "enum" in schema:
        kind += " (" + ", ".join(f"``{v}``" for v in schema["enum"]) + ")"
    elif "format" in schema:
        kind += f" ({schema['format']})"
    return kind


def _rst(text: str) -> str:
    """The document's Markdown code spans as reStructuredText literals."""
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)


def _one_line(text: str) -> str:
    return _rst(" ".join(text.split()))


def _operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method in HTTP_METHODS:
            if method in methods:
                yield method.upper(), path, methods[method]


def openapi_rst(document: Mapping[str, Any]) -> list[str]:
    """Every operation of ``document`` as a section, then its schemas and the whole text."""
    out: list[str] = []
    for method, path, op in _operations(document):
        title = f"``{method} {path}``"
        out += [f".. _openapi-{op['operationId']}:", "", title, "-" * len(title), ""]
        out += [_one_line(op.get("summary", "")), ""]
        if op.get("description"):
            out += [*_rst(textwrap.dedent(op["description"])).strip().splitlines(), ""]
        params = op.get("parameters", [])
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if params or body:
            out += [
                ".. list-table::",
                "   :header-rows: 1",
                "   :widths: 20 10 25 45",
                "",
                "   * - parameter",
                "     - in",
                "     - type",
                "     - meaning",
            ]
            for param in params:
                required = " (required)" if param.get("required") else ""
                out += [
                    f"   * - ``{param['name']}``",
                    f"     - {param['in']}{required}",
                    f"     - {_schema_text(param.get('schema', {}))}",
                    f"     - {_one_line(param.get('description', ''))}",
                ]
            if body:
                out += [
                    "   * - body",
                    "     - body (required)",
                    f"     - {_schema_text(body['schema'])}",
                    "     - JSON",
                ]
            out.append("")
        out += ["Answers:", ""]
        for status, answer in op.get("responses", {}).items():
            shown = [
                f"``{kind}`` {_schema_text(c['schema'])}" if "schema" in c else f"``{kind}``"
                for kind, c in answer.get("content", {}).items()
            ]
            what = _one_line(answer.get("description", ""))
            out.append(f"- ``{status}``: {what}" + (f" — {', '.join(shown)}" if shown else ""))
        out.append("")
    out += ["Schemas", "-------", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        out += [f".. _openapi-{name.lower()}:", "", f"``{name}``", "~" * (len(name) + 4), ""]
        if schema.get("description"):
            out += [_one_line(schema["description"]), ""]
        required = set(schema.get("required", ()))
        for field, prop in schema.get("properties", {}).items():
            line = f"- ``{field}``: {_schema_text(prop)}"
            if field in required:
                line += ", required"
            if prop.get("description"):
                line += f" — {_one_line(prop['description'])}"
            out.append(line)
        out.append("")
    out += [
        "The document",
        "------------",
        "",
        ".. code-block:: json",
        "",
        *(f"   {line}" for line in json.dumps(document, indent=2).splitlines()),
        "",
    ]
    return out


# -- the layer map ------------------------------------------------------------------------------


def first_sentence(module: str) -> str:
    """The opening sentence of a module's docstring, as a table cell."""
    import importlib

    name = f"tutor_times.{module}" if module else "tutor_times"
    doc = importlib.import_module(name).__doc__ or ""
    text = " ".join(doc.split())
    end = text.find(". ")
    return _rst(text if end < 0 else text[: end + 1])


def layer_contract() -> list[list[str]]:
    """The layers of the import contract in ``setup.cfg`` (``[importlinter:contract:flow]``),
    highest first, each a list of the rooms that stand side by side on it."""
    import configparser

    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    lines = config["importlinter:contract:flow"]["layers"].split("\n")
    return [[room.strip() for room in line.split("|")] for line in lines if line.strip()]


def rooms_of(package: str) -> list[str]:
    """The modules of ``package`` (dotted, under ``tutor_times``), the package itself first."""
    root = Path(__file__).resolve().parents[2]
    folder = root / package.replace(".", "/")
    if not folder.is_dir():
        return [package]
    modules = sorted(p for p in folder.rglob("*.py") if p.name != "__init__.py")
    return [package, *(".".join(p.relative_to(root).with_suffix("").parts) for p in modules)]


def layers_rst() -> list[str]:
    """The import contract's layers, highest first: a room imports only the rooms below it,
    and rooms on one layer never import each other. Each module with the opening sentence of
    its docstring."""
    out = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 8 30 62",
        "",
        "   * - layer",
        "     - module",
        "     - what it is (its docstring)",
    ]
    layers = layer_contract()
    for number, rooms in enumerate(layers):
        for room in rooms:
            for module in rooms_of(room):
                out += [
                    f"   * - {len(layers) - number}",
                    f"     - ``{module}``",
                    f"     - {first_sentence(module.removeprefix('tutor_times').lstrip('.'))}",
                ]
    return [*out, ""]


# -- directives and the rule links --------------------------------------------------------------


class _Generated(SphinxDirective):
    """Parse generated reStructuredText where the directive stands."""

    def render(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.section() if self.allow_sections else nodes.container()
        container.document = self.state.document
        content = StringList(lines, source=f"<{self.name}>")
        self.state.nested_parse(content, 0, container, match_titles=self.allow_sections)
        return list(container.children)

    allow_sections = False


class SettingsDirective(_Generated):
    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(ModuleAnalyzer.for_module("tutor_times.core.constants").srcname)
        return self.render(settings_rst())


class LayersDirective(_Generated):
    def run(self) -> list[nodes.Node]:
        return self.render(layers_rst())


class OpenApiDirective(_Generated):
    allow_sections = True

    def run(self) -> list[nodes.Node]:
        document, _ = demo_openapi()
        return self.render(openapi_rst(document))


class RuleLinks(SphinxTransform):
    """Turn ``R7`` in running text into a link to rule R7 on the rules page."""

    default_priority = 700

    def apply(self, **kwargs: Any) -> None:
        for text in list(self.document.findall(nodes.Text)):
            if not RULE.search(text) or self._excluded(text):
                continue
            parent = text.parent
            replacement: list[nodes.Node] = []
            last = 0
            source = str(text)
            for match in RULE.finditer(source):
                replacement.append(nodes.Text(source[last : match.start()]))
                ref = addnodes.pending_xref(
                    "",
                    refdomain="std",
                    reftype="ref",
                    reftarget=f"r{match[1]}",
                    refexplicit=True,
                    refwarn=True,
                )
                ref += nodes.inline(match[0], match[0])
                replacement.append(ref)
                last = match.end()
            replacement.append(nodes.Text(source[last:]))
            parent.replace(text, replacement)

    @staticmethod
    def _excluded(text: nodes.Node) -> bool:
        node: nodes.Node | None = text.parent
        while node is not None:
            if isinstance(node, NO_RULE_LINKS):
                return True
            node = node.parent
        return False


class SettingLinks(SphinxTransform):
    """Turn a setting's name written as code (``TUTOR_TIMES_STORE``) into a link to its entry
    on the configuration page."""

    default_priority = 701

    def apply(self, **kwargs: Any) -> None:
        from tutor_times.core.constants import DEFAULTS

        for literal in list(self.document.findall(nodes.literal)):
            key = literal.astext()
            if key not in DEFAULTS or RuleLinks._excluded(literal):
                continue
            ref = addnodes.pending_xref(
                "", refdomain="std", reftype="confval", reftarget=key, refwarn=True
            )
            literal.replace_self(ref)
            ref += literal


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("tutor-times-settings", SettingsDirective)
    app.add_directive("tutor-times-openapi", OpenApiDirective)
    app.add_directive("tutor-times-layers", LayersDirective)
    app.add_transform(RuleLinks)
    app.add_transform(SettingLinks)
    # the HTTP page shows CSV answers; Pygments has no CSV lexer, so they are shown as text
    app.add_lexer("csv", TextLexer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
