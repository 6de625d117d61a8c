"""Configurations of the demo LMS. Pick one with DEMO_CONFIG=development|testing|production.

Without DEMO_CONFIG the demo runs as production: ``gunicorn wsgi:app`` on a server must never
fall into debug mode or a known secret because a variable was forgotten. ``make run`` asks for
development.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Secrets that have been published (this project's old fallback among them) or that a
# template suggests; a cookie signed with one of them would log anyone in as anyone.
KNOWN_SECRETS = frozenset(
    {
        "dev-only-not-secret",
        "dev",
        "development",
        "secret",
        "secret-key",
        "secret_key",
        "changeme",
        "change-me",
        "please-change-me",
        "your-secret-key",
        "supersecret",
    }
)
MIN_SECRET_LENGTH = 32
# A key for development and tests only: new in each process, so a restart logs everyone out,
# and nothing signed with it is valid anywhere else.
PROCESS_SECRET = secrets.token_hex(32)


def check_secret_key(key: str | None) -> str:
    """``key`` when it is strong enough to sign session cookies; a RuntimeError otherwise."""
    hint = "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
    if not key:
        raise RuntimeError(f"production needs the environment variable SECRET_KEY; {hint}")
    if key.strip().lower() in KNOWN_SECRETS:
        raise RuntimeError(f"SECRET_KEY is a published default and signs nothing safely; {hint}")
    if len(key) < MIN_SECRET_LENGTH or len(set(key)) < 10:
        raise RuntimeError(
            f"SECRET_KEY is too weak: use at least {MIN_SECRET_LENGTH} random characters; {hint}"
        )
    return key


def _environment_value(name: str) -> Any:
    """A variable as ``create_app`` reads TUTOR_TIMES_* keys: JSON when it parses."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class Config:
    PASSWORD_HASH_METHOD = "scrypt"
    SECRET_KEY: str | None = None
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{HERE / 'instance' / 'demo.sqlite'}"
    )
    # A pooled connection can be dead (a database restart, an idle timeout in a proxy):
    # test it before use rather than fail the request that gets it.
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True}
    # Unset: the embedded in-process store; set it to use a Redis server.
    TUTOR_TIMES_REDIS_URL = os.environ.get("TUTOR_TIMES_REDIS_URL") or None
    JSON_SORT_KEYS = False
    # How many proxies in front of the app set X-Forwarded-For/-Proto (0: none, trust none).
    TRUSTED_PROXIES = int(os.environ.get("TRUSTED_PROXIES", "0"))
    # The demo's timetable and enrolments feed tutor_times' class_times_loader and
    # student_count_loader: reports split minutes by class time and show minutes per student.
    DEMO_TIMETABLE = True


class DevelopmentConfig(Config):
    DEBUG = True
    SECRET_KEY = os.environ.get("SECRET_KEY") or PROCESS_SECRET


class TestingConfig(Config):
    TESTING = True
    SECRET_KEY = PROCESS_SECRET
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    TUTOR_TIMES_REDIS_URL = None
    # Tests close sessions themselves, at the times they choose.
    TUTOR_TIMES_IN_PROCESS_SWEEPER = False
    # Reports as a host without a timetable gives them; tests register their own loaders.
    DEMO_TIMETABLE = False
    # Demo passwords need no strength in tests; scrypt would cost 0.1 s a user.
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1"


class ProductionConfig(Config):
    """Everything from the environment; refuses to start without it or with a weak secret.

    A missing SECRET_KEY is refused rather than replaced by a random one: each gunicorn worker
    would draw its own, and a login made by one worker would be unknown to the next.
    """

    DEBUG = False
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = True
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"

    def __init__(self) -> None:
        self.SECRET_KEY = check_secret_key(os.environ.get("SECRET_KEY"))
        if not os.environ.get("DATABASE_URL"):
            raise RuntimeError("production needs the environment variable DATABASE_URL")
        self.SQLALCHEMY_DATABASE_URI = os.environ["DATABASE_URL"]
        self.TUTOR_TIMES_REDIS_URL = os.environ.get("TUTOR_TIMES_REDIS_URL") or None
        store = _environment_value("TUTOR_TIMES_STORE") or "redis"
        if store != "sql" and self.TUTOR_TIMES_REDIS_URL is None:
            # The embedded store lives in one process; gunicorn's workers would each keep
            # their own, and no worker command could hear their expiries.
            raise RuntimeError(
                "production needs the environment variable TUTOR_TIMES_REDIS_URL"
                " (or TUTOR_TIMES_STORE=sql for the SQL-only store)"
            )


configs: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}
