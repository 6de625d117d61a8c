"""A small OnTrack-like LMS that mounts tutor_times, for trying it and for its tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .extensions import db, login_manager, migrate, tutor_times

ROOT = Path(__file__).resolve().parent.parent


def _tutor_times_environment() -> dict[str, Any]:
    """Any TUTOR_TIMES_* key from the environment; JSON values (numbers, lists) are parsed."""
    from tutor_times.core.constants import DEFAULTS

    found: dict[str, Any] = {}
    for key in DEFAULTS:
        if key in os.environ:
            try:
                found[key] = json.loads(os.environ[key])
            except ValueError:
                found[key] = os.environ[key]
    return found


def create_app(config: str | None = None, **overrides: Any) -> Flask:
    from config import ProductionConfig, configs

    # Production unless asked otherwise: a forgotten variable must not mean debug mode.
    name = config or os.environ.get("DEMO_CONFIG", "production")
    if name not in configs:
        raise RuntimeError(f"unknown DEMO_CONFIG {name!r}; one of {', '.join(configs)}")
    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    cls = configs[name]
    app.config.from_object(cls() if cls is ProductionConfig else cls)
    app.config.update(_tutor_times_environment())
    app.config.update(overrides)
    os.makedirs(app.instance_path, exist_ok=True)
    if app.config["TRUSTED_PROXIES"]:
        # Only then may X-Forwarded-For name the tutor's address (the session key).
        hops = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    db.init_app(app)
    login_manager.init_app(app)
    # where the dashboard pages send a visitor who is not logged in
    login_manager.login_view = "lms.login_page"
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    tutor_times.init_app(app)

    from . import home, log_import, models, timetable  # noqa: F401  (tables, hooks, pages)
    from .seed import seed_demo_command
    from .views import bp

    # the timetable's loaders, unless this configuration leaves the reports without them
    timetable.wire(tutor_times, enabled=app.config["DEMO_TIMETABLE"])
    app.register_blueprint(bp)
    app.cli.add_command(seed_demo_command)
    return app
