"""Configurations of the demo LMS. Pick one with DEMO_CONFIG=development|testing|production."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Config:
    PASSWORD_HASH_METHOD = "scrypt"
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-not-secret")
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{HERE / 'instance' / 'demo.sqlite'}"
    )
    # Unset: the embedded in-process store; set it to use a Redis server.
    TUTOR_TIMES_REDIS_URL = os.environ.get("TUTOR_TIMES_REDIS_URL") or None
    JSON_SORT_KEYS = False


class DevelopmentConfig(Config):
    DEBUG = True


class TestingConfig(Config):
    TESTING = True
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    TUTOR_TIMES_REDIS_URL = None
    # Tests close sessions themselves, at the times they choose.
    TUTOR_TIMES_IN_PROCESS_SWEEPER = False
    # Demo passwords need no strength in tests; scrypt would cost 0.1 s a user.
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1"


class ProductionConfig(Config):
    """Everything from the environment; refuses to start without it."""

    def __init__(self) -> None:
        for name in ("SECRET_KEY", "DATABASE_URL", "TUTOR_TIMES_REDIS_URL"):
            if not os.environ.get(name):
                raise RuntimeError(f"production needs the environment variable {name}")
        self.SECRET_KEY = os.environ["SECRET_KEY"]
        self.SQLALCHEMY_DATABASE_URI = os.environ["DATABASE_URL"]
        self.TUTOR_TIMES_REDIS_URL = os.environ["TUTOR_TIMES_REDIS_URL"]


configs: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}
