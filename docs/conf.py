"""Sphinx configuration of the tutor_times documentation (``make docs``).

The build needs no network: the intersphinx inventories are files in ``_inventories/``
(``_inventories/make_inventories.py`` says where they come from).
"""

from __future__ import annotations

import sys
from importlib.metadata import version as installed_version
from pathlib import Path

from pallets_sphinx_themes import ProjectLink

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the package, the demo host (the OpenAPI page builds it) and this folder's extension
sys.path[:0] = [str(ROOT), str(HERE / "_ext")]

project = "tutor_times"
copyright = "tutor_times contributors"
release = installed_version("tutor_times")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx_click",
    "myst_parser",
    "pallets_sphinx_themes",
    "tutor_times_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_inventories", "_ext", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# -- Markdown -------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 4

# -- API reference --------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}
autodoc_mock_imports: list[str] = []

intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(HERE / "_inventories" / "python.inv")),
    "flask": (
        "https://flask.palletsprojects.com/en/stable/",
        str(HERE / "_inventories" / "flask.inv"),
    ),
    "werkzeug": (
        "https://werkzeug.palletsprojects.com/en/stable/",
        str(HERE / "_inventories" / "werkzeug.inv"),
    ),
    "click": (
        "https://click.palletsprojects.com/en/stable/",
        str(HERE / "_inventories" / "click.inv"),
    ),
    "sqlalchemy": (
        "https://docs.sqlalchemy.org/en/20/",
        str(HERE / "_inventories" / "sqlalchemy.inv"),
    ),
}
intersphinx_timeout = 1

# The type variables and aliases of the signatures, and the extension's per-app state, are
# not documented names: shown as text.
nitpick_ignore_regex = [
    ("py:class", r"tutor_times\.extension\.F"),
    ("py:class", r"(LogPathResolver|UsernameResolver)"),
    ("py:class", r"tutor_times\.state\.AppState"),
]

# -- HTML -----------------------------------------------------------------------------------
html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_context = {
    "project_links": [
        ProjectLink("Rules of time accounting", "rules.html"),
        ProjectLink("HTTP API", "reference/http.html"),
        ProjectLink("Changelog", "development/changelog.html"),
    ]
}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_static_path = ["_static"]
html_title = f"tutor_times Documentation ({version})"
html_show_sourcelink = False
