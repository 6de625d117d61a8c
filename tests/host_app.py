"""A minimal host LMS, copied into a temporary folder as ``host.py`` and driven with the real
``flask db`` commands, from the source tree or from an installed wheel.

Environment:
- ``DATABASE_URL``: its database;
- ``WITH_TUTOR_TIMES=1``: the host has mounted tutor_times (unset: a project from before);
- ``HOST_STEP=2``: the host's next model change (a column on ``units``).
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify
from flask_login import LoginManager, UserMixin, login_required, login_user
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
login_manager = LoginManager()
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id = sa.Column(Id, primary_key=True)
    name = sa.Column(sa.String(80), nullable=False)


class Unit(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "units"
    id = sa.Column(Id, primary_key=True)
    code = sa.Column(sa.String(20), nullable=False)
    if os.environ.get("HOST_STEP") == "2":
        term = sa.Column(sa.String(20))


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    app.config["SECRET_KEY"] = os.urandom(32)
    app.config["TUTOR_TIMES_STORE"] = "sql"
    db.init_app(app)
    login_manager.init_app(app)
    migrate = Migrate(app, db)
    if os.environ.get("WITH_TUTOR_TIMES") == "1":
        mount_tutor_times(app, migrate)
    return app


def mount_tutor_times(app: Flask, migrate: Migrate) -> None:
    from tutor_times import TutorTimes
    from tutor_times.migrations import include_migrations

    tutor_times = TutorTimes(app, db=db)
    migrate.configure(include_migrations)

    @tutor_times.role_loader
    def unit_role(user: Any, unit_id: int) -> str:
        return "tutor"

    @app.post("/login/<int:user_id>")
    def login(user_id: int) -> Any:
        login_user(db.session.get(User, user_id))
        return "", 204

    @app.put("/units/<int:unit_id>/tasks/<int:task_id>")
    @login_required
    @tutor_times.track("assessing", unit_id="unit_id", task_id="task_id")
    def assess(unit_id: int, task_id: int) -> Any:
        return jsonify(unit_id=unit_id, task_id=task_id)
