"""The extension's own Alembic branch (label ``tutor_times``) for hosts with their own migrations.

With Flask-Migrate::

    from tutor_times.migrations import include_migrations
    migrate = Migrate(app, db)
    migrate.configure(include_migrations)

then ``flask db upgrade <your head>`` followed by ``flask db upgrade tutor_times@head``
(or ``flask db upgrade heads`` once your users and units tables exist).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: the folder of this branch's revision files
VERSIONS_DIR = str(Path(__file__).with_name("versions"))
BRANCH = "tutor_times"


def include_migrations(config: Any) -> Any:
    """Add this branch to an Alembic config's ``version_locations`` (a Flask-Migrate callback)."""
    locations = config.get_version_locations_list() or [
        os.path.join(config.get_main_option("script_location"), "versions")
    ]
    if VERSIONS_DIR not in locations:
        locations.append(VERSIONS_DIR)
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(locations))
    return config
