"""A small OnTrack-like LMS: users, units, unit roles, projects, tasks, task definitions."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from flask import current_app
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id = sa.Column(Id, primary_key=True)
    username = sa.Column(sa.String(80), unique=True, nullable=False)
    name = sa.Column(sa.String(120), nullable=False)
    password_hash = sa.Column(sa.String(256), nullable=False)
    is_admin = sa.Column(sa.Boolean, nullable=False, default=False)
    # Stored in each login's session and checked on every request; logging out moves it on,
    # so a session cookie copied before the logout is worthless after it.
    session_version = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(
            password, method=current_app.config["PASSWORD_HASH_METHOD"]
        )

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "username": self.username, "name": self.name}


class Unit(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "units"
    id = sa.Column(Id, primary_key=True)
    code = sa.Column(sa.String(20), unique=True, nullable=False)
    name = sa.Column(sa.String(120), nullable=False)


class UnitRole(db.Model):  # type: ignore[name-defined,misc]
    """A staff member's role in a unit: convenor or tutor. Students enrol through projects."""

    __tablename__ = "unit_roles"
    id = sa.Column(Id, primary_key=True)
    user_id = sa.Column(sa.BigInteger, sa.ForeignKey("users.id"), nullable=False)
    unit_id = sa.Column(sa.BigInteger, sa.ForeignKey("units.id"), nullable=False)
    role = sa.Column(sa.String(20), nullable=False)
    __table_args__ = (
        sa.UniqueConstraint("user_id", "unit_id"),
        sa.CheckConstraint("role IN ('convenor', 'tutor')", name="ck_unit_roles_role"),
    )


class TaskDefinition(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "task_definitions"
    id = sa.Column(Id, primary_key=True)
    unit_id = sa.Column(sa.BigInteger, sa.ForeignKey("units.id"), nullable=False)
    abbreviation = sa.Column(sa.String(20), nullable=False)
    name = sa.Column(sa.String(120), nullable=False)


class Project(db.Model):  # type: ignore[name-defined,misc]
    """A student's enrolment in a unit."""

    __tablename__ = "projects"
    id = sa.Column(Id, primary_key=True)
    unit_id = sa.Column(sa.BigInteger, sa.ForeignKey("units.id"), nullable=False)
    user_id = sa.Column(sa.BigInteger, sa.ForeignKey("users.id"), nullable=False)
    __table_args__ = (sa.UniqueConstraint("unit_id", "user_id"),)


class Task(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "tasks"
    id = sa.Column(Id, primary_key=True)
    project_id = sa.Column(sa.BigInteger, sa.ForeignKey("projects.id"), nullable=False)
    task_definition_id = sa.Column(
        sa.BigInteger, sa.ForeignKey("task_definitions.id"), nullable=False
    )
    status = sa.Column(sa.String(30), nullable=False, default="ready_for_feedback")
    submission = sa.Column(sa.Text, nullable=False, default="")
    project = db.relationship("Project")
    task_definition = db.relationship("TaskDefinition")

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "task_definition_id": self.task_definition_id,
            "task": self.task_definition.abbreviation,
            "status": self.status,
        }


class Comment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "comments"
    id = sa.Column(Id, primary_key=True)
    task_id = sa.Column(sa.BigInteger, sa.ForeignKey("tasks.id"), nullable=False)
    user_id = sa.Column(sa.BigInteger, sa.ForeignKey("users.id"), nullable=False)
    text = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=_now)


class Tutorial(db.Model):  # type: ignore[name-defined,misc]
    """A weekly class of a unit, at local wall-clock times of the unit's zone: a tutorial or
    lab of one tutor, or (no tutor) a class every tutor of the unit takes part in."""

    __tablename__ = "tutorials"
    id = sa.Column(Id, primary_key=True)
    unit_id = sa.Column(sa.BigInteger, sa.ForeignKey("units.id"), nullable=False)
    tutor_id = sa.Column(sa.BigInteger, sa.ForeignKey("users.id"))
    abbreviation = sa.Column(sa.String(20), nullable=False)
    #: 0 = Monday … 6 = Sunday
    weekday = sa.Column(sa.Integer, nullable=False)
    starts_at = sa.Column(sa.Time, nullable=False)
    ends_at = sa.Column(sa.Time, nullable=False)
    __table_args__ = (
        sa.UniqueConstraint("unit_id", "abbreviation"),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_tutorials_weekday"),
        sa.CheckConstraint("ends_at > starts_at", name="ck_tutorials_order"),
    )


class TutorialEnrolment(db.Model):  # type: ignore[name-defined,misc]
    """A student's place (their project) in a tutorial."""

    __tablename__ = "tutorial_enrolments"
    id = sa.Column(Id, primary_key=True)
    tutorial_id = sa.Column(sa.BigInteger, sa.ForeignKey("tutorials.id"), nullable=False)
    project_id = sa.Column(sa.BigInteger, sa.ForeignKey("projects.id"), nullable=False)
    __table_args__ = (sa.UniqueConstraint("tutorial_id", "project_id"),)
