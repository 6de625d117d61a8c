"""The app B2 serves under gunicorn: the demo LMS on the benchmark database, plus the
demo's inbox view twice more, run by the same code: without ``@tutor_times.track``, and
with the floor of any tracking after it (one raw EVALSHA, one raw INSERT + COMMIT)."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask_login import login_required

from benchmarks.b1_hot_path import floor_call
from benchmarks.common import DATABASE_URL, REDIS_URL, bench_app
from demo.extensions import tutor_times
from demo.views import inbox

DB = os.environ.get("TUTOR_TIMES_BENCH_APP_DATABASE_URL", DATABASE_URL)
app: Flask = bench_app(
    DB, TUTOR_TIMES_REDIS_PREFIX=os.environ.get("TUTOR_TIMES_REDIS_PREFIX", "tt-bench-b2")
)
# inbox = login_required(track(view)): unwrap both
view = inbox.__wrapped__.__wrapped__  # type: ignore[attr-defined]
_floor: dict[int, Any] = {}  # per process (gunicorn forks): pid -> the floor's call


def floor_inbox(unit_id: int) -> Any:
    response = view(unit_id)
    pid = os.getpid()
    if pid not in _floor:
        activity = tutor_times.record_activity(
            "inbox", marker_id=4, unit_id=1, ip_address=f"10.255.{pid // 256 % 256}.{pid % 256}"
        )
        _floor[pid] = floor_call(DB, REDIS_URL, activity.marking_session_id)[0]
    _floor[pid]()
    return response


app.add_url_rule("/untracked/units/<int:unit_id>/inbox", "untracked_inbox", login_required(view))
app.add_url_rule("/floor/units/<int:unit_id>/inbox", "floor_inbox", login_required(floor_inbox))
