"""The demo as a deployment: production unless asked otherwise, and nothing unsafe in it."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from config import KNOWN_SECRETS, PROCESS_SECRET
from demo import create_app
from demo.extensions import db
from demo.models import User
from demo.seed import seed

from ..conftest import built, login
from ..databases import scratch_database

ROOT = Path(__file__).resolve().parents[2]
STRONG = "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The environment of a production demo on a SQLite file, SQL-only store."""
    for name in ("DEMO_CONFIG", "TUTOR_TIMES_REDIS_URL", "TUTOR_TIMES_STORE", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'prod.sqlite'}")
    monkeypatch.setenv("TUTOR_TIMES_STORE", "sql")
    return tmp_path


def seeded_production_app() -> Flask:
    app = create_app()
    with app.app_context():
        db.create_all()
        seed()
    return app


def test_without_demo_config_it_is_production(production_env: Path) -> None:
    app = create_app()
    assert app.debug is False
    assert app.config["SECRET_KEY"] == STRONG
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_production_without_a_secret_key_refuses_to_start(
    production_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SECRET_KEY")
    with pytest.raises(RuntimeError, match="needs the environment variable SECRET_KEY"):
        create_app()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("dev-only-not-secret", "published default"),
        ("changeme", "published default"),
        ("short-but-random-Q7x", "too weak"),
        ("a" * 64, "too weak"),
    ],
)
def test_a_weak_secret_key_is_refused(
    production_env: Path, monkeypatch: pytest.MonkeyPatch, key: str, message: str
) -> None:
    monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(RuntimeError, match=message):
        create_app()


def test_production_needs_redis_only_for_the_redis_store(
    production_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app()
    assert app.extensions["tutor_times"].state_of(app).redis is None  # TUTOR_TIMES_STORE=sql
    monkeypatch.setenv("TUTOR_TIMES_STORE", "redis")
    with pytest.raises(RuntimeError, match="TUTOR_TIMES_REDIS_URL"):
        create_app()


def test_development_is_asked_for_and_has_no_fixed_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app("development")
    assert app.debug is True
    assert app.config["SECRET_KEY"] == PROCESS_SECRET
    assert PROCESS_SECRET not in KNOWN_SECRETS and len(PROCESS_SECRET) >= 32
    run_recipe = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1]
    assert re.search(r"export DEMO_CONFIG := development", run_recipe)


def test_production_cookies_are_secure_httponly_and_lax(production_env: Path) -> None:
    app = seeded_production_app()
    r = app.test_client().post("/login", json={"username": "tutor1", "password": "password"})
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_cookie_signed_with_the_old_fixed_key_is_worthless(production_env: Path) -> None:
    app = seeded_production_app()
    forger = Flask("forger")
    forger.secret_key = "dev-only-not-secret"
    serializer = SecureCookieSessionInterface().get_signing_serializer(forger)
    assert serializer is not None
    forged = serializer.dumps({"_user_id": "1", "_fresh": True, "session_version": 0})
    client = app.test_client()
    client.set_cookie("session", forged)
    assert client.get("/me").status_code == 401


def test_logout_ends_the_session_for_good() -> None:
    with built("sqlite") as app:
        client = login(app, "tutor1")
        saved = client.get_cookie("session")
        assert saved is not None
        assert client.get("/me").status_code == 200
        assert client.post("/logout").status_code == 204
        client.set_cookie("session", saved.value)  # the cookie copied before the logout
        assert client.get("/me").status_code == 401
        again = login(app, "tutor1")  # a new login works, and so does the cookie it gets
        assert again.get("/me").status_code == 200


def test_an_unknown_user_takes_as_long_to_refuse_as_a_wrong_password() -> None:
    slow = "pbkdf2:sha256:150000"  # slow enough that hashing dominates the request
    with built("sqlite", PASSWORD_HASH_METHOD=slow) as app:
        with app.app_context():
            user = User(username="slowpoke", name="Slow Poke")
            user.set_password("right")
            db.session.add(user)
            db.session.commit()
        client = app.test_client()
        try:

            def median_seconds(username: str) -> float:
                times = []
                for _ in range(5):
                    started = time.perf_counter()
                    r = client.post("/login", json={"username": username, "password": "wrong"})
                    times.append(time.perf_counter() - started)
                    assert r.status_code == 401
                return statistics.median(times)

            known, unknown = median_seconds("slowpoke"), median_seconds("nobody-by-this-name")
            assert unknown > known / 2, (known, unknown)
        finally:
            with app.app_context():
                db.session.execute(sa.delete(User).where(User.username == "slowpoke"))
                db.session.commit()


@pytest.fixture
def postgres_demo(tmp_path: Path) -> Iterator[Flask]:
    with scratch_database("postgres", tmp_path, "prepping") as url:
        app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TUTOR_TIMES_STORE="sql")
        with app.app_context():
            db.create_all()
            seed()
        yield app
        with app.app_context():
            db.engine.dispose()


@pytest.mark.real
def test_connections_killed_by_the_database_are_replaced_unnoticed(postgres_demo: Flask) -> None:
    """What a database restart does to the pool: every pooled connection is gone."""
    client = login(postgres_demo, "tutor1")
    assert client.get("/units/1/inbox").status_code == 200
    with postgres_demo.app_context():
        name = db.engine.url.database
        killer = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)
        with killer.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).scalar_one()
        killer.dispose()
    assert killed >= 1
    for _ in range(4):
        assert client.get("/units/1/inbox").status_code == 200
