"""The demo's front page and favicon, and its units' names for tutor_times' dashboard.

``make run`` opens on ``/``: who to log in as, the dashboards and the JSON endpoints, so a
first visit needs no README.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache
from typing import Any

import sqlalchemy as sa
from flask import Response, render_template_string, url_for

from .extensions import db, tutor_times
from .models import Unit
from .seed import PASSWORD
from .views import bp

#: the demo's users as ``flask seed-demo`` makes them, and what each sees
WHO = [
    ("convenor", "every tutor of COS10001 (and can read each one's sessions)"),
    ("tutor1", "their own marking only, in the unit and across units"),
    ("tutor2", "their own marking only"),
    ("admin", "every unit, as the site's administrator"),
    ("student1", "nothing: students are never tracked and get 403"),
]

HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="{{ url_for('lms.favicon') }}" type="image/png">
<title>Demo LMS · tutor_times</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 0 auto; padding: 1rem;
       color: #1d2330; }
code { background: #eef1f5; padding: 0 .25rem; border-radius: 4px; }
li { margin: .2rem 0; }
</style></head>
<body>
<h1>Demo LMS with tutor_times</h1>
<p>A small OnTrack-like LMS whose marking endpoints are tracked by tutor_times: how long each
tutor spends marking, per session, unit and task.</p>

<h2>Log in</h2>
<p><a href="{{ login }}">Log in</a> with password <code>{{ password }}</code> as:</p>
<ul>{% for username, sees in who %}
<li><code>{{ username }}</code>: sees {{ sees }}</li>{% endfor %}
</ul>

<h2>Dashboards</h2>
<ul>{% for unit in units %}
<li><a data-link="unit-dashboard" href="{{ url_for('tutor_times.unit_dashboard', unit_id=unit.id) }}">{{ unit.code }} {{ unit.name }}</a>: the unit's marking time (convenor: every tutor; tutor: their own)</li>{% else %}
<li>No units yet: <code>flask seed-demo --history</code> fills the demo (<code>make run</code> does).</li>{% endfor %}
<li><a data-link="my-dashboard" href="{{ url_for('tutor_times.my_dashboard') }}">My marking</a>: the logged-in tutor's own time, across units</li>
</ul>

<h2>JSON endpoints</h2>
<p>Each answers JSON, or CSV with <code>?format=csv</code>; log in first.</p>
<ul>{% for label, href in endpoints %}
<li><a data-link="json" href="{{ href }}">{{ label }}</a></li>{% endfor %}
<li><a data-link="openapi" href="{{ url_for('tutor_times.openapi') }}">openapi.json</a>: every endpoint, its parameters and answers</li>
</ul>
</body></html>"""


@tutor_times.unit_name_loader
def unit_names(unit_ids: list[int]) -> dict[int, str]:
    """The dashboard's units by code and name (``COS10001 Introduction to Programming``)."""
    rows = db.session.execute(sa.select(Unit.id, Unit.code, Unit.name).where(Unit.id.in_(unit_ids)))
    return {unit_id: f"{code} {name}" for unit_id, code, name in rows}


@bp.get("/")
def home() -> Any:
    """Where ``make run``'s address opens: the way in."""
    units = db.session.execute(sa.select(Unit.id, Unit.code, Unit.name).order_by(Unit.id)).all()
    first = units[0].id if units else 1
    endpoints = [
        (f"summary of unit {first}", url_for("tutor_times.summary", unit_id=first)),
        (f"sessions of unit {first}", url_for("tutor_times.unit_sessions", unit_id=first)),
        (f"timeline of unit {first}", url_for("tutor_times.timeline", unit_id=first)),
        (f"tasks of unit {first}", url_for("tutor_times.tasks", unit_id=first)),
        (f"marking now in unit {first}", url_for("tutor_times.active", unit_id=first)),
        ("my sessions", url_for("tutor_times.my_sessions")),
    ]
    first_dashboard = url_for("tutor_times.unit_dashboard", unit_id=first)
    return render_template_string(
        HOME_PAGE,
        login=url_for("lms.login_page", next=first_dashboard),
        password=PASSWORD,
        who=WHO,
        units=units,
        endpoints=endpoints,
    )


@cache
def _favicon_png() -> bytes:
    """A 32 × 32 PNG: a blue clock face with white hands, drawn here (no binary files)."""
    size, blue, white, clear = 32, (31, 95, 191, 255), (255, 255, 255, 255), (0, 0, 0, 0)
    rows = []
    for y in range(size):
        row = bytearray(b"\x00")  # filter: none
        for x in range(size):
            dx, dy = x - 15.5, y - 15.5
            inside = dx * dx + dy * dy <= 15.5 * 15.5
            hand = (abs(dx) < 1.6 and -11 < dy < 0) or (abs(dy) < 1.6 and 0 < dx < 8)
            row += bytes(white if inside and hand else blue if inside else clear)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The browser asks for it on every site: an icon, not a 404 in the console."""
    response = Response(_favicon_png(), mimetype="image/png")
    response.cache_control.max_age = 86400
    response.cache_control.public = True
    return response
