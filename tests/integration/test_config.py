"""Set-up mistakes get clear errors at set-up time, not at the first tracked request."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy

from tutor_times import ConfigurationError, TutorTimes, UnknownActionError
from tutor_times.core.constants import DEFAULTS


def host(**config: Any) -> tuple[Flask, SQLAlchemy]:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **config)
    return app, SQLAlchemy(app)


def test_db_is_required() -> None:
    with pytest.raises(TypeError, match="'db'"):
        TutorTimes(Flask(__name__))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="db=db"):
        TutorTimes(Flask(__name__), db=None)  # type: ignore[arg-type]


def test_defaults_are_set_and_overridable() -> None:
    app, db = host(TUTOR_TIMES_SESSION_TIMEOUT=600)
    TutorTimes(app, db=db)
    assert app.config["TUTOR_TIMES_SESSION_TIMEOUT"] == 600
    for key, value in DEFAULTS.items():
        if key != "TUTOR_TIMES_SESSION_TIMEOUT":
            assert app.config[key] == value
    assert all(key.startswith("TUTOR_TIMES_") for key in DEFAULTS)


def test_a_second_instance_on_one_app_is_refused() -> None:
    app, db = host()
    TutorTimes(app, db=db)
    with pytest.raises(RuntimeError, match="already been registered"):
        TutorTimes(db=SQLAlchemy()).init_app(app)


def test_one_instance_serves_several_apps() -> None:
    db = SQLAlchemy()
    ext = TutorTimes(db=db)
    for _ in range(2):
        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
        db.init_app(app)
        ext.init_app(app)
        assert app.extensions["tutor_times"] is ext


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TUTOR_TIMES_SESSION_TIMEOUT", 0, "positive number of seconds"),
        ("TUTOR_TIMES_SESSION_TIMEOUT", "900", "positive number of seconds"),
        ("TUTOR_TIMES_MIN_SESSION_MINUTES", 0, ">= 1"),
        ("TUTOR_TIMES_STORE", "memcached", "one of redis, sql"),
        ("TUTOR_TIMES_ACTIONS", "assessing", "non-empty list"),
        ("TUTOR_TIMES_ACTIONS", [], "non-empty list"),
        ("TUTOR_TIMES_SWEEP_BATCH_SIZE", 0, ">= 1"),
        ("TUTOR_TIMES_IDEMPOTENCY_TTL", 3600, "86400 or more"),
        ("TUTOR_TIMES_HEALTH_PUBLIC", "yes", "True or False"),
        ("TUTOR_TIMES_HEALTH_MAX_HEARTBEAT_AGE", 0, "positive"),
        ("TUTOR_TIMES_METRICS", 1, "True or False"),
        ("TUTOR_TIMES_METRICS_TOKEN", "short", "at least 16 characters"),
        ("TUTOR_TIMES_RETENTION_DAYS", 0, ">= 1"),
        ("TUTOR_TIMES_RETENTION_MODE", "shred", "delete, anonymize"),
        # "false" read from an environment variable would be truthy: only a real boolean
        ("TUTOR_TIMES_DASHBOARD", "false", "True or False"),
        ("TUTOR_TIMES_REDIS_CLUSTER", "yes", "True or False"),
        # a cluster is named by the URL of one of its nodes
        ("TUTOR_TIMES_REDIS_CLUSTER", True, "needs TUTOR_TIMES_REDIS_URL"),
        # no SQLALCHEMY_BINDS at all: a typo must not send reports to the primary unnoticed
        ("TUTOR_TIMES_REPORTS_BIND", "replica", "a bind in SQLALCHEMY_BINDS"),
        ("TUTOR_TIMES_REPORTS_BIND", "", "a bind in SQLALCHEMY_BINDS"),
    ],
)
def test_bad_config_is_refused_at_init(key: str, value: object, message: str) -> None:
    app, db = host(**{key: value})
    with pytest.raises(ConfigurationError, match=message) as info:
        TutorTimes(app, db=db)
    assert key in str(info.value)


def test_track_checks_its_action_when_the_app_is_known() -> None:
    app, db = host()
    ext = TutorTimes(app, db=db)
    with pytest.raises(UnknownActionError, match="grading"):
        ext.track("grading", unit_id="unit_id")


def test_custom_actions_are_accepted() -> None:
    app, db = host(TUTOR_TIMES_ACTIONS=["assessing", "video-review"])
    ext = TutorTimes(app, db=db)
    ext.track("video-review", unit_id="unit_id")


@pytest.mark.parametrize("spec", [{"unit_id": None}, {"unit_id": 5}, {"unit_id": "u", "when": "x"}])
def test_track_specs_are_checked(spec: dict[str, Any]) -> None:
    app, db = host()
    ext = TutorTimes(app, db=db)
    with pytest.raises(TypeError, match="track"):
        ext.track("inbox", **spec)


def test_using_an_app_without_init_app_is_a_clear_error() -> None:
    ext = TutorTimes(db=SQLAlchemy())
    app = Flask(__name__)
    with app.app_context(), pytest.raises(ConfigurationError, match="init_app"):
        ext.record_activity("inbox", marker_id=1, unit_id=1, ip_address="10.0.0.1")


def test_the_sql_store_makes_no_redis_client() -> None:
    app, db = host(TUTOR_TIMES_STORE="sql")
    ext = TutorTimes(app, db=db)
    assert ext.state_of(app).redis is None


def test_a_typo_in_track_fails_at_init_app_under_an_app_factory() -> None:
    """The demo's own pattern: the extension exists before the app; views are decorated at
    import time. The action is checked when init_app comes, not silently never recorded."""
    db = SQLAlchemy()
    ext = TutorTimes(db=db)
    ext.track("inboxx", unit_id="unit_id")
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    with pytest.raises(UnknownActionError, match="inboxx"):
        ext.init_app(app)


def test_a_typo_in_track_fails_at_decoration_once_an_app_is_known() -> None:
    db = SQLAlchemy()
    ext = TutorTimes(db=db)
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", TUTOR_TIMES_ACTIONS=["inbox"])
    db.init_app(app)
    ext.init_app(app)
    ext.track("inbox", unit_id="unit_id")
    with pytest.raises(UnknownActionError, match="assessing"):
        ext.track("assessing", unit_id="unit_id")  # allowed by default, not by this app


def test_a_view_argument_the_route_lacks_fails_loudly_on_the_first_request() -> None:
    from tutor_times import ConfigurationError as Refused

    app, db = host(SECRET_KEY="x" * 32, TESTING=True)
    ext = TutorTimes(app, db=db)

    @app.get("/units/<int:unit>/inbox")
    @ext.track("inbox", unit_id="unit_id")  # the route calls it `unit`
    def inbox(unit: int) -> str:
        return "ok"

    client = app.test_client()
    with pytest.raises(Refused, match=r"unit_id='unit_id'.*has no argument 'unit_id'"):
        client.get("/units/1/inbox")
    with pytest.raises(Refused):  # and on every request until it is fixed
        client.get("/units/1/inbox")


def test_a_route_without_int_records_its_decimal_ids() -> None:
    """``<unit_id>`` hands the view a string: a decimal string is the id it spells."""
    from tutor_times.tracking.decorator import resolve

    assert resolve("unit_id", {"unit_id": "42"}) == 42
    assert resolve("unit_id", {"unit_id": 42}) == 42
    for text in ("4a", "", "٤٢", "-1", " 1"):  # not ASCII decimal digits: refused later
        assert resolve("unit_id", {"unit_id": text}) == text


def test_the_configured_backdating_window_cannot_exceed_the_timeout() -> None:
    app, db = host(TUTOR_TIMES_SESSION_TIMEOUT=30, TUTOR_TIMES_MAX_BACKDATE=31)
    with pytest.raises(ConfigurationError, match="TUTOR_TIMES_MAX_BACKDATE must not exceed"):
        TutorTimes(app, db=db)


def test_the_default_backdating_window_shrinks_with_a_short_timeout() -> None:
    app, db = host(TUTOR_TIMES_SESSION_TIMEOUT=30)
    ext = TutorTimes(app, db=db)
    settings = ext.state_of(app).settings
    assert settings.max_backdate.total_seconds() == 30
    assert settings.closing_delay.total_seconds() == 60


def test_client_actions_must_be_allowed_actions() -> None:
    app, db = host(TUTOR_TIMES_CLIENT_ACTIONS=["inbox", "heartbeat"])
    with pytest.raises(ConfigurationError, match="heartbeat"):
        TutorTimes(app, db=db)


def test_a_client_may_never_report_assessments() -> None:
    """R11: assessments come only from the host's tracked endpoints."""
    app, db = host(TUTOR_TIMES_CLIENT_ACTIONS=["inbox", "assessing"])
    with pytest.raises(ConfigurationError, match="must not list 'assessing'"):
        TutorTimes(app, db=db)


def test_by_default_a_client_may_not_report_assessments() -> None:
    app, db = host()
    ext = TutorTimes(app, db=db)
    settings = ext.state_of(app).settings
    assert "assessing" not in settings.client_actions
    assert settings.client_actions == {"inbox", "get-submission-details"}


def test_a_host_with_its_own_actions_starts_without_naming_client_actions() -> None:
    """TUTOR_TIMES_CLIENT_ACTIONS unset: the default client actions the host's list allows."""
    app, db = host(TUTOR_TIMES_ACTIONS=["inbox", "reading"])
    ext = TutorTimes(app, db=db)
    assert ext.state_of(app).settings.client_actions == {"inbox"}


def test_an_explicit_client_action_the_host_does_not_allow_is_refused() -> None:
    app, db = host(
        TUTOR_TIMES_ACTIONS=["inbox", "reading"],
        TUTOR_TIMES_CLIENT_ACTIONS=["inbox", "get-submission-details"],
    )
    with pytest.raises(ConfigurationError, match="does not allow: get-submission-details"):
        TutorTimes(app, db=db)


def test_when_no_default_client_action_is_allowed_a_client_report_is_a_clear_400() -> None:
    """A host whose actions include none of the default client actions starts, and POST
    /activities then says that this server accepts no client reports; nothing is written."""
    app, db = host(TUTOR_TIMES_ACTIONS=["reading", "assessing"], SECRET_KEY="k" * 32)
    login_manager = LoginManager(app)

    class User(UserMixin):  # type: ignore[misc]
        id = 7

    login_manager.request_loader(lambda request: User())
    ext = TutorTimes(app, db=db)
    ext.role_loader(lambda user, unit_id: "tutor")
    assert ext.state_of(app).settings.client_actions == frozenset()
    for host_table in ("users", "units"):  # what the tracking tables' foreign keys name
        sa.Table(host_table, db.metadata, sa.Column("id", sa.Integer, primary_key=True))
    with app.app_context():
        db.create_all()
    client = app.test_client()
    for action in ("reading", "inbox"):
        r = client.post("/tutor-times/activities", json={"action": action, "unit_id": 1})
        assert r.status_code == 400, r.get_data(as_text=True)
        error = r.get_json()["error"]
        assert error["field"] == "action"
        assert "accepts no client-reported actions" in error["message"]
        assert "TUTOR_TIMES_CLIENT_ACTIONS" in error["message"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ext.SessionActivity)) == 0
