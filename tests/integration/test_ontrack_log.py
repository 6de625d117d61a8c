"""``--format ontrack-log`` on the logs doubtfire-api really writes.

Every sample here is written from doubtfire-lms/doubtfire-api's sources: the line layout of
``config/initializers/log_initializer.rb`` (``<time>,<ip>,<SEVERITY>: <message>``, since 2022)
or Rails' bare messages before it; ``Started`` as rails/rails
``railties/lib/rails/rack/logger.rb`` writes it; ``Authenticated`` from
``app/helpers/authentication_helpers.rb``; ``assessing task`` from ``app/api/tasks_api.rb``;
``added comment`` from ``app/api/task_comments_api.rb``; the routes of ``units_api.rb``,
``tasks_api.rb``, ``task_comments_api.rb``, ``submission/portfolio_evidence_api.rb`` and
``submission/batch_task_api.rb``. The two week-long samples in ``tests/data`` are written by
``tests/data/make_ontrack_log.py``, with the activities they hold.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import selectinload

from demo.extensions import db, tutor_times
from demo.models import Project
from tutor_times.history.rows import DUPLICATE, ImportReport

from ..conftest import BACKENDS, Clock, build, stored
from .test_history import stored_sessions
from .test_property import TIMEOUT, reference

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLES = ["ontrack-sample", "ontrack-sample-2021"]


@pytest.fixture(params=BACKENDS)
def import_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["tutor-times", "import", *args])


def imported(app: Flask, *args: str) -> str:
    result = run(app, *args, "--format", "ontrack-log")
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def truth(name: str) -> list[dict[str, str]]:
    with open(DATA / f"{name}.expected.csv", newline="") as f:
        return list(csv.DictReader(f))


def as_stream(rows: list[dict[str, str]]) -> list[tuple[Any, ...]]:
    return [
        (
            "act",
            (int(r["marker_id"]), int(r["unit_id"]), r["ip_address"]),
            datetime.fromisoformat(r["created_at"]),
        )
        for r in rows
    ]


def _id(text: str) -> int | None:
    return int(text) if text else None


def activities(app: Flask) -> Counter[tuple[Any, ...]]:
    """Every stored activity with its session's key, as the truth files write them."""
    act = tutor_times.SessionActivity
    found: Counter[tuple[Any, ...]] = Counter()
    for a in stored(app, act, selectinload(act.marking_session)):
        s = a.marking_session
        at = a.created_at.astimezone(timezone.utc) if a.created_at.tzinfo else a.created_at
        found[
            (
                s.marker_id,
                s.unit_id,
                s.ip_address,
                a.action,
                a.project_id,
                a.task_id,
                a.task_definition_id,
                at.replace(tzinfo=None),
            )
        ] += 1
    return found


def expected_activities(rows: list[dict[str, str]]) -> Counter[tuple[Any, ...]]:
    return Counter(
        (
            int(r["marker_id"]),
            int(r["unit_id"]),
            r["ip_address"],
            r["action"],
            _id(r["project_id"]),
            _id(r["task_id"]),
            _id(r["task_definition_id"]),
            datetime.fromisoformat(r["created_at"]).astimezone(timezone.utc).replace(tzinfo=None),
        )
        for r in rows
    )


@pytest.mark.parametrize("name", SAMPLES)
def test_a_week_of_either_layout_imports_as_the_activities_it_holds(
    import_app: Flask, name: str
) -> None:
    """A week in each layout doubtfire-api has written (doubtfire-lms/doubtfire-api
    ``config/initializers/log_initializer.rb`` since 2022; Rails' bare messages before, as
    doubtfire-lms/log-analysis' README reads them), over the end of daylight-saving time:
    staff triggers, students' triggers, comments, the batch route, IPv6, interleaved
    threads, FATAL routing errors with ``\\n`` backtraces, logins and token refreshes. No
    request has a ``Completed`` line; each activity equals the generator's own record."""
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    log = str(DATA / f"{name}.log")
    first = imported(import_app, log, "--batch-size", "50")
    report = ImportReport(expected["read"], expected["imported"], Counter(expected["skipped"]))
    assert first.strip() == report.summary()
    rows = truth(name)
    assert activities(import_app) == expected_activities(rows)
    assert stored_sessions(import_app) == reference(as_stream(rows), TIMEOUT)
    again = imported(import_app, log)
    assert f"imported 0, skipped {expected['read']}" in again
    assert f"{expected['imported']} {DUPLICATE}" in again


def test_a_gzipped_log_imports_as_the_plain_one(import_app: Flask, tmp_path: Path) -> None:
    """The modern sample (doubtfire-lms/doubtfire-api ``config/initializers/
    log_initializer.rb``), rotated by gzip: the same rows, and the same file to a re-import."""
    packed = tmp_path / "production.log.gz"
    with open(DATA / "ontrack-sample.log", "rb") as plain, gzip.open(packed, "wb") as out:
        shutil.copyfileobj(plain, out)
    expected = json.loads((DATA / "ontrack-sample.expected.json").read_text())
    assert f"imported {expected['imported']}," in imported(import_app, str(packed))
    assert "imported 0," in imported(import_app, str(DATA / "ontrack-sample.log"))


# -- small samples, each line as doubtfire-api writes it ------------------------------------

STAMP = "2024-04-03 10:00:{:02d} +1100"


def line(second: int, ip: str, message: str, severity: str = "INFO") -> str:
    """A line of doubtfire-lms/doubtfire-api ``config/initializers/log_initializer.rb``."""
    return f"{STAMP.format(second)},{ip},{severity}: {message}\n"


def started(second: int, method: str, path: str, ip: str, shown: str = "unknown") -> str:
    """rails/rails ``railties/lib/rails/rack/logger.rb``: ``Started %s "%s" for %s at %s``,
    written before the API's before-hook stores the address (``app/api/api_root.rb``)."""
    return line(second, shown, f'Started {method} "{path}" for {ip} at {STAMP.format(second)}')


def write(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "production.log"
    path.write_text("".join(lines))
    return str(path)


def rows_of(app: Flask) -> list[tuple[Any, ...]]:
    return sorted((k[0], k[3], k[5], k[2]) for k in activities(app).elements())


def test_interleaved_requests_of_two_tutors_are_each_their_own(
    import_app: Flask, tmp_path: Path
) -> None:
    """Two Puma threads, two tutors, their lines crossed and no request tag
    (doubtfire-lms/doubtfire-api ``config/environments/production.rb`` leaves ``log_tags``
    commented out): tutor1 (IPv6) assesses, tutor2 comments; each line is paired by address
    and user, not by "the last request started"."""
    t1, t2 = "2001:db8:4::17", "10.20.0.12"
    log = write(
        tmp_path,
        started(1, "PUT", "/api/projects/1/task_def_id/2", t1),
        started(1, "POST", "/api/projects/2/task_def_id/1/comments", t2, shown=t1),
        line(1, t2, f"Authenticated tutor2 from {t2}"),
        line(1, t1, f"Authenticated tutor1 from {t1}"),
        line(1, t2, "tutor2 - added comment for task 4 (1.1P)"),
        line(1, t1, "tutor1 assessing task 2 to complete"),
    )
    out = imported(import_app, log)
    assert "read 2 rows, imported 2, skipped 0" in out
    assert rows_of(import_app) == [(3, "assessing", 2, t1), (4, "add-comment", 4, t2)]


def test_bare_lines_of_the_older_layout_pair_by_user(import_app: Flask, tmp_path: Path) -> None:
    """Rails' default formatter writes the bare message (doubtfire-lms/log-analysis README:
    strip ``^20.*INFO: `` *or nothing*): the ``assessing`` line names no address, so it goes
    to its user's request (doubtfire-lms/doubtfire-api ``app/api/tasks_api.rb``)."""
    at = "2021-03-31 10:00:00 +1100"
    log = write(
        tmp_path,
        f'Started PUT "/api/projects/1/task_def_id/2" for 10.20.0.11 at {at}\n',
        f'Started PUT "/api/projects/2/task_def_id/3" for 10.20.0.12 at {at}\n',
        "Authenticated tutor1 from 10.20.0.11\n",
        "Authenticated tutor2 from 10.20.0.12\n",
        "tutor2 assessing task 6 to discuss\n",
        "tutor1 assessing task 2 to fix_and_resubmit\n",
    )
    assert "imported 2, skipped 0" in imported(import_app, log)
    assert rows_of(import_app) == [
        (3, "assessing", 2, "10.20.0.11"),
        (4, "assessing", 6, "10.20.0.12"),
    ]


def test_only_staff_triggers_by_staff_are_assessments(import_app: Flask, tmp_path: Path) -> None:
    """doubtfire-lms/doubtfire-api ``app/api/tasks_api.rb`` logs ``assessing task`` for every
    trigger, before ``Task#trigger_transition`` (``app/models/task.rb``) refuses a student a
    staff status: a student's own ``ready_for_feedback``, a student's ``complete`` and a
    tutor's ``working_on_it`` are no assessment; a tutor's ``demonstrate`` is (R7)."""
    s, t = "10.30.1.1", "10.20.0.11"
    log = write(
        tmp_path,
        started(1, "PUT", "/api/projects/1/task_def_id/1", s),
        line(1, s, f"Authenticated student1 from {s}"),
        line(1, s, "student1 assessing task 1 to ready_for_feedback"),
        started(2, "PUT", "/api/projects/1/task_def_id/2", s, shown=s),
        line(2, s, f"Authenticated student1 from {s}"),
        line(2, s, "student1 assessing task 2 to complete"),
        started(3, "PUT", "/api/projects/1/task_def_id/3", t, shown=s),
        line(3, t, f"Authenticated tutor1 from {t}"),
        line(3, t, "tutor1 assessing task 3 to working_on_it"),
        started(4, "PUT", "/api/projects/2/task_def_id/1", t, shown=t),
        line(4, t, f"Authenticated tutor1 from {t}"),
        line(4, t, "tutor1 assessing task 4 to demonstrate"),
    )
    out = imported(import_app, log)
    assert "read 4 rows, imported 1, skipped 3 (3 not marking)" in out
    assert rows_of(import_app) == [(3, "assessing", 4, t)]


def test_a_markers_own_project_is_not_marking(import_app: Flask, tmp_path: Path) -> None:
    """tutor2 enrolled in unit 1 as well opens their own submission (doubtfire-lms/
    doubtfire-api ``app/api/tasks_api.rb`` ``submission_details``): skipped, as live tracking
    skips it; the same route on a student's project is marking."""
    with import_app.app_context():
        own = Project(unit_id=1, user_id=4)
        db.session.add(own)
        db.session.commit()
        own_id = own.id
    t = "10.20.0.12"
    log = write(
        tmp_path,
        started(1, "GET", f"/api/projects/{own_id}/task_def_id/1/submission_details", t),
        line(1, t, f"Authenticated tutor2 from {t}"),
        started(2, "GET", "/api/projects/1/task_def_id/1/submission_details", t, shown=t),
        line(2, t, f"Authenticated tutor2 from {t}"),
    )
    out = imported(import_app, log)
    assert "read 2 rows, imported 1, skipped 1 (1 not marking)" in out
    assert rows_of(import_app) == [(4, "get-submission-details", 1, t)]
    with import_app.app_context():
        db.session.execute(sa.delete(Project).where(Project.id == own_id))
        db.session.commit()


def test_the_batch_route_takes_the_unit_of_the_tutors_previous_request(
    import_app: Flask, tmp_path: Path
) -> None:
    """``POST /api/submission/assess/`` (doubtfire-lms/doubtfire-api
    ``app/api/submission/batch_task_api.rb``) carries its unit in the multipart body: the
    inbox the tutor opened before names it; with no earlier request it is an unknown unit."""
    t = "10.20.0.11"
    log = write(
        tmp_path,
        started(1, "POST", "/api/submission/assess/", "10.20.0.99"),
        line(1, "10.20.0.99", "Authenticated tutor2 from 10.20.0.99"),
        started(2, "GET", "/api/units/1/tasks/inbox", t),
        line(2, t, f"Authenticated tutor1 from {t}"),
        started(9, "POST", "/api/submission/assess/", t, shown=t),
        line(9, t, f"Authenticated tutor1 from {t}"),
    )
    out = imported(import_app, log)
    assert "read 3 rows, imported 2, skipped 1 (1 unknown unit)" in out
    assert rows_of(import_app) == [(3, "PUT", None, t), (3, "inbox", None, t)]


def test_noise_is_neither_imported_nor_counted(import_app: Flask, tmp_path: Path) -> None:
    """What else doubtfire-api writes between marking requests: a routing error as FATAL
    with its backtrace escaped as ``\\n`` (doubtfire-lms/doubtfire-api
    ``config/initializers/log_initializer.rb``), a login and a token refresh
    (``app/api/authentication_api.rb``), an expired token on a marking route
    (``app/helpers/authentication_helpers.rb``: it answers 419), a Rails download with
    ``Processing by`` and ``Completed``."""
    s, t = "10.30.1.2", "10.20.0.12"
    fatal = (
        '\\nActionController::RoutingError (No route matches [GET] "/wp-login.php"):\\n  \\n'
        "actionpack (7.1.3) lib/action_dispatch/middleware/debug_exceptions.rb:61:in `call'"
    )
    log = write(
        tmp_path,
        started(1, "GET", "/wp-login.php", "198.51.100.9"),
        line(1, "unknown", fatal, "FATAL"),
        started(2, "POST", "/api/auth", s),
        line(2, s, f"Login student2 from {s}"),
        started(3, "PUT", "/api/auth", s, shown=s),
        line(3, s, f"Update token 4f1c09a7e2 from {s} for student2"),
        started(4, "GET", "/api/units/1/tasks/inbox", t, shown=s),
        line(4, t, f"Timing out token for tutor2 from {t}"),
        started(5, "GET", "/api/submission/unit/1/portfolio/7", s, shown=t),
        line(5, s, "Processing by PortfolioDownloadsController#index as HTML"),
        line(5, s, "Completed 200 OK in 12ms (ActiveRecord: 2.1ms)"),
        started(6, "GET", "/api/units/1/tasks/inbox", t, shown=s),
        line(6, t, f"Authenticated tutor2 from {t}"),
    )
    assert "read 1 rows, imported 1, skipped 0" in imported(import_app, log)
    assert rows_of(import_app) == [(4, "inbox", None, t)]


def test_a_file_of_another_format_gets_a_clear_message(import_app: Flask, tmp_path: Path) -> None:
    """A CSV, and a log in Ruby's ``Logger::Formatter`` shape with request tags (which
    doubtfire-api does not write: its formatter is doubtfire-lms/doubtfire-api
    ``config/initializers/log_initializer.rb``), given as ``ontrack-log``: the import stops
    with a message naming the formats and quoting the first lines it did not recognise,
    and writes nothing."""
    tagged = tmp_path / "tagged.log"
    tagged.write_text(
        "".join(
            f"I, [2024-03-04T12:28:{n:02d}.000000 #4242]  INFO -- : [3c9217d0b6] Started GET"
            f' "/api/units/1/tasks/inbox" for 10.20.0.3 at 2024-03-04 12:28:{n:02d} +1100\n'
            for n in range(40)
        )
    )
    table = tmp_path / "history.csv"
    table.write_text(
        "marker_id,unit_id,ip_address,action,project_id,task_id,task_definition_id,created_at\n"
        + "3,1,10.0.0.1,inbox,,,,2024-03-04T10:00:00+11:00\n" * 5
    )
    for path, first in ((tagged, "I, [2024-03-04T12:28:00"), (table, "marker_id,unit_id")):
        result = run(import_app, str(path), "--format", "ontrack-log")
        assert result.exit_code != 0
        message = " ".join(result.output.split())
        assert f"{path} is not an OnTrack log" in message
        assert "<time>,<ip>,<SEVERITY>: <message>" in message
        assert "--format csv" in message and "--format ontrack-db" in message
        assert f"line 1: '{first}" in message
        assert "malformed line" not in message
    assert stored_sessions(import_app) == []
