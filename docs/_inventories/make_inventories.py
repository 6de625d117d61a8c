"""Write the intersphinx inventories this folder ships, so ``make docs`` never needs the network.

Each comes from a Debian package that ships the project's built documentation (run as root on
Debian 12: ``apt-get install python3.11-doc python-flask-doc python-werkzeug-doc
python-click-doc python-sqlalchemy-doc``, then ``python docs/_inventories/make_inventories.py``).
The Pallets sites are served as directories (``api/`` rather than ``api.html``), so their
addresses are rewritten to match. Debian 12's Flask is 2.2 and its SQLAlchemy 1.4: the names
this documentation links to are the same in the versions tutor_times requires. redis-py and
Flask-SQLAlchemy ship no built documentation in a package, so they have no inventory here:
no page links to their names today, and a docstring that did would fail the build (``-n``)
until one is added.
"""

from __future__ import annotations

import posixpath
import re
import zlib
from pathlib import Path

from sphinx.util.inventory import InventoryFile

HERE = Path(__file__).resolve().parent
DEBIAN = Path("/usr/share/doc")
#: name of the shipped file: (Debian's file, rewrite .html pages as directories)
SOURCES = {
    "python.inv": ("python3.11/html/objects.inv", False),
    "flask.inv": ("python-flask-doc/html/objects.inv", True),
    "werkzeug.inv": ("python-werkzeug-doc/html/objects.inv", True),
    "click.inv": ("python-click-doc/html/objects.inv", True),
    "sqlalchemy.inv": ("python-sqlalchemy-doc/html/objects.inv", False),
}


def as_directory(uri: str) -> str:
    """``api.html#flask.Flask`` -> ``api/#flask.Flask``; ``index.html`` -> ``""``."""
    page, _, anchor = uri.partition("#")
    page = re.sub(r"(^|/)index\.html$", r"\1", page)
    page = re.sub(r"\.html$", "/", page)
    return f"{page}#{anchor}" if anchor else page


def rewrite(source: Path, target: Path, directories: bool) -> None:
    with source.open("rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    items = inventory.data if hasattr(inventory, "data") else inventory
    project = version = ""
    lines = []
    for kind, entries in sorted(items.items()):
        domain, _, role = kind.partition(":")
        for name, item in sorted(entries.items()):
            project, version, uri, shown = (
                item.project_name,
                item.project_version,
                item.uri,
                item.display_name,
            )
            if directories:
                uri = as_directory(uri)
            if uri.endswith(name) and "#" in uri:
                uri = uri[: -len(name)] + "$"
            lines.append(f"{name} {domain}:{role} 1 {uri} {shown}\n")
    head = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    target.write_bytes(head.encode() + zlib.compress("".join(lines).encode()))


def main() -> None:
    for name, (source, directories) in SOURCES.items():
        rewrite(DEBIAN / source, HERE / name, directories)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
