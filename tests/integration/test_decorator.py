"""R7 and R9 through the demo's tracked HTTP endpoints."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import selectinload
from werkzeug.middleware.proxy_fix import ProxyFix

from demo.extensions import tutor_times

from ..conftest import TASK, Clock, activities, login, sessions, stored


@pytest.fixture
def tutor(app: Flask) -> FlaskClient:
    return login(app, "tutor1")


def test_each_marking_endpoint_records_its_action(app: Flask, tutor: FlaskClient) -> None:
    assert tutor.get("/units/1/inbox").status_code == 200
    assert tutor.get(f"{TASK}/submission").status_code == 200
    assert tutor.post(f"{TASK}/comments", json={"text": "Nice work"}).status_code == 201
    assert tutor.put(TASK, json={"status": "complete"}).status_code == 200
    acts = activities(app)
    assert [a.action for a in acts] == [
        "inbox",
        "get-submission-details",
        "add-comment",
        "assessing",
    ]
    assert [(a.project_id, a.task_id, a.task_definition_id) for a in acts[1:]] == [(1, 1, 1)] * 3
    assert acts[0].project_id is None and acts[0].task_id is None
    [s] = sessions(app)
    assert (s.marker_id, s.unit_id, s.ip_address) == (3, 1, "127.0.0.1")


def test_the_response_is_unchanged_by_tracking(app: Flask, tutor: FlaskClient) -> None:
    r = tutor.put(TASK, json={"status": "discuss"})
    assert r.status_code == 200
    assert r.get_json() == {
        "id": 1,
        "project_id": 1,
        "status": "discuss",
        "task": "1.1P",
        "task_definition_id": 1,
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("put", TASK, {"status": "not-a-status"}, 400),
        ("post", f"{TASK}/comments", {"text": ""}, 400),
        ("get", "/units/1/projects/1/tasks/999/submission", None, 404),
        ("get", "/units/1/projects/2/tasks/1/submission", None, 404),
        ("get", "/units/2/inbox", None, 403),  # tutor1 has no role in unit 2
    ],
)
def test_an_error_response_records_nothing(
    app: Flask, tutor: FlaskClient, method: str, path: str, body: Any, status: int
) -> None:
    r = getattr(tutor, method)(path, json=body)
    assert r.status_code == status
    assert activities(app) == []


def test_a_view_that_raises_records_nothing(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/units/<int:unit_id>/explode")
    @tutor_times.track("inbox", unit_id="unit_id")
    def explode(unit_id: int) -> Any:
        raise RuntimeError("boom")

    tutor = login(app, "tutor1")
    assert tutor.get("/units/1/explode").status_code == 500
    assert activities(app) == []


@pytest.mark.parametrize("username", ["student1", "student2"])
def test_students_are_never_tracked(app: Flask, username: str) -> None:
    client = login(app, username)
    # student1 opens their own submission; student2 comments on their own task
    project = 1 if username == "student1" else 2
    task = 1 if username == "student1" else 4
    base = f"/units/1/projects/{project}/tasks/{task}"
    assert client.get(f"{base}/submission").status_code == 200
    assert client.post(f"{base}/comments", json={"text": "done"}).status_code == 201
    assert sessions(app) == [] and activities(app) == []


def test_anonymous_requests_are_not_tracked(app: Flask) -> None:
    r = app.test_client().get("/units/1/inbox")
    assert r.status_code == 401
    assert activities(app) == []


@pytest.mark.parametrize(("username", "role"), [("admin", "admin"), ("convenor", "convenor")])
def test_admins_and_convenors_are_tracked(app: Flask, username: str, role: str) -> None:
    with app.app_context():
        assert tutor_times.role_of(_user(app, username), 1) == role
    client = login(app, username)
    assert client.put(TASK, json={"status": "redo"}).status_code == 200
    [a] = activities(app)
    assert a.action == "assessing"


def _user(app: Flask, username: str) -> Any:
    from demo.extensions import db
    from demo.models import User

    with app.app_context():
        user = db.session.query(User).filter_by(username=username).one()
        db.session.expunge(user)
        return user


def test_a_marker_on_their_own_project_is_not_tracked(app: Flask) -> None:
    """tutor2 is staff in unit 1 and also enrolled there: `when=` keeps their own task out."""
    from demo.extensions import db
    from demo.models import Project, Task

    with app.app_context():
        project = Project(unit_id=1, user_id=4)
        db.session.add(project)
        db.session.flush()
        task = Task(project_id=project.id, task_definition_id=1)
        db.session.add(task)
        db.session.commit()
        pid, tid = project.id, task.id
    try:
        with app.app_context():
            assert tutor_times.role_of(_user(app, "tutor2"), 1) == "tutor"
        base = f"/units/1/projects/{pid}/tasks/{tid}"
        assert login(app, "tutor2").put(base, json={"status": "complete"}).status_code == 200
        assert activities(app) == []
        assert login(app, "tutor1").put(base, json={"status": "complete"}).status_code == 200
        assert [a.marking_session.marker_id for a in _with_sessions(app)] == [3]
    finally:
        with app.app_context():
            db.session.query(Task).filter_by(id=tid).delete()
            db.session.query(Project).filter_by(id=pid).delete()
            db.session.commit()


def _with_sessions(app: Flask) -> list[Any]:
    act = tutor_times.SessionActivity
    return stored(app, act, selectinload(act.marking_session))


def test_the_ip_is_the_peer_address_not_a_forwarded_header(app: Flask, tutor: FlaskClient) -> None:
    r = tutor.put(
        TASK,
        json={"status": "complete"},
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    )
    assert r.status_code == 200
    assert sessions(app)[0].ip_address == "192.0.2.10"


def test_behind_proxyfix_the_forwarded_address_is_used(app: Flask, tutor: FlaskClient) -> None:
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    r = tutor.put(
        TASK,
        json={"status": "complete"},
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.254"},
    )
    assert r.status_code == 200
    assert sessions(app)[0].ip_address == "203.0.113.9"


def test_two_tracked_requests_from_one_tutor_share_a_session(
    app: Flask, tutor: FlaskClient, clock: Clock
) -> None:
    tutor.put(TASK, json={"status": "complete"})
    clock.advance(minutes=14, seconds=59)
    tutor.put("/units/1/projects/1/tasks/2", json={"status": "complete"})
    clock.advance(minutes=15)
    tutor.get("/units/1/inbox")
    first, second = sessions(app)
    assert first.end_time is not None and first.duration_minutes == 14
    assert second.end_time is None


@pytest.fixture
def broken_resolver(app: Flask) -> Iterator[None]:
    def missing_task(kwargs: Any) -> int:
        raise LookupError("no task")

    @app.get("/units/<int:unit_id>/broken")
    @tutor_times.track("inbox", unit_id="unit_id", task_id=missing_task)
    def broken(unit_id: int) -> Any:
        return {"ok": True}

    yield


def test_a_failing_resolver_leaves_the_response_and_is_logged(
    app: Flask, broken_resolver: None, caplog: pytest.LogCaptureFixture
) -> None:
    tutor = login(app, "tutor1")
    before = tutor_times.failures
    with caplog.at_level(logging.ERROR, logger="tutor_times"):
        r = tutor.get("/units/1/broken")
    assert r.status_code == 200 and r.get_json() == {"ok": True}
    assert tutor_times.failures == before + 1
    assert "could not record the 'inbox' activity" in caplog.text
    assert "LookupError" in caplog.text
    assert activities(app) == []


def test_a_missing_role_loader_is_a_clear_logged_error(
    app: Flask,
    tutor: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tutor_times, "_role_loader", None)
    with caplog.at_level(logging.ERROR, logger="tutor_times"):
        r = tutor.put(TASK, json={"status": "complete"})
    assert r.status_code == 200
    assert "@tutor_times.role_loader" in caplog.text
    assert activities(app) == []


def test_a_route_declared_without_int_is_recorded_with_its_numeric_ids(app: Flask) -> None:
    """`<unit_id>` hands the view a string; it used to fail every request, logged, forever."""

    @app.get("/units/<unit_id>/plain-inbox")
    @tutor_times.track("inbox", unit_id="unit_id")
    def plain_inbox(unit_id: str) -> Any:
        return {"unit": unit_id}

    before = tutor_times.failures
    r = login(app, "tutor1").get("/units/1/plain-inbox")
    assert r.status_code == 200 and r.get_json() == {"unit": "1"}
    assert tutor_times.failures == before
    [a] = _with_sessions(app)
    assert (a.marking_session.unit_id, a.action) == (1, "inbox")


def test_record_activity_is_the_trusted_service_api(app: Flask) -> None:
    """The host calls record_activity for its own users (imports, other front ends): it
    checks the input, not roles. Roles are checked where a request's user acts: the decorator
    and POST /activities (a student is refused there)."""
    student = _user(app, "student1")
    with app.app_context():
        a = tutor_times.record_activity(
            "inbox", marker_id=student.id, unit_id=1, ip_address="10.0.0.9"
        )
    assert a.marking_session_id is not None
    r = login(app, "student1").post(
        "/tutor-times/activities", json={"action": "inbox", "unit_id": 1}
    )
    assert r.status_code == 403
    assert len(activities(app)) == 1
