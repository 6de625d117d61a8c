"""Writes the sample OnTrack logs of the import tests, with what they hold, from a fixed seed.

``python -m tests.data.make_ontrack_log`` writes, for each layout doubtfire-api has written,
the log (noise included), ``….expected.csv`` (every activity the log holds, one per row: the
ground truth of the tests, written here as each request is made, not read back from the log)
and ``….expected.json`` (what an import must count):

- ``ontrack-sample.log``: the layout since 2022, ``<time>,<ip>,<SEVERITY>: <message>`` with a
  message's newlines escaped as ``\\n`` (doubtfire-lms/doubtfire-api
  ``config/initializers/log_initializer.rb``; ``config/environments/doubtfire_logger.rb``
  before it). ``<ip>`` is the address the API's before-hook stored on the server thread
  (``app/api/api_root.rb``), so a ``Started`` line, which Rails writes before that hook, shows
  ``unknown`` or the thread's previous request's address;
- ``ontrack-sample-2021.log``: the layout before, Rails' default formatter: the bare message
  (doubtfire-lms/log-analysis' README strips ``^20.*INFO: `` or nothing).

Both hold the same kind of week (days around the end of daylight-saving time in Melbourne,
so the offsets go from +1100 to +1000), in the lines doubtfire-api writes:

- ``Started <METHOD> "<path>" for <ip> at <time>`` (rails/rails
  ``railties/lib/rails/rack/logger.rb``); the API is Grape, so no ``Processing by`` and no
  ``Completed`` line, except for the Rails controllers of file downloads;
- ``Authenticated <username> from <ip>`` (``app/helpers/authentication_helpers.rb``),
  ``Login <username> from <ip>`` and ``Update token <token> from <ip> for <username>``
  (``app/api/authentication_api.rb``), ``Timing out token for <username> from <ip>``;
- ``<username> assessing task <id> to <trigger>`` (``app/api/tasks_api.rb``: written for every
  status change, students' own included, before the role check) and ``<username> - added
  comment for task <id> (<abbr>)`` (``app/api/task_comments_api.rb``);
- the marking routes of ``units_api.rb``, ``tasks_api.rb``, ``task_comments_api.rb``,
  ``submission/portfolio_evidence_api.rb`` and ``submission/batch_task_api.rb``;
- noise: routing errors logged as FATAL with their backtrace, unhandled exceptions, logins,
  token refreshes, students' own requests, interleaved requests of two tutors on two server
  threads.

The demo's ids: users admin 1, convenor 2, tutor1 3, tutor2 4, students 5-8 (student N owns
project N of unit 1); unit 1 has task definitions 1-3 (1.1P, 2.1P, 3.1C); task id =
3 * (project - 1) + definition.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ZONE = ZoneInfo("Australia/Melbourne")
ABBREVIATIONS = {1: "1.1P", 2: "2.1P", 3: "3.1C"}
#: username -> (user id or None when the demo has no such user, addresses)
TUTORS = {
    "tutor1": (3, ["10.20.0.11", "2001:db8:4::17"]),
    "tutor2": (4, ["10.20.0.12"]),
    "convenor": (2, ["10.20.0.3"]),
    "admin": (1, ["10.20.0.1"]),
    "casual7": (None, ["10.20.0.77"]),
}
STAFF_TRIGGERS = ["complete", "fix_and_resubmit", "discuss", "demonstrate", "redo", "fail"]
STUDENT_TRIGGERS = ["ready_for_feedback", "need_help", "working_on_it"]
THREADS = 5
STEP = timedelta(milliseconds=15)


@dataclass
class Line:
    at: datetime
    order: int
    severity: str
    message: str
    #: the request whose address the thread shows once the API's before-hook ran, or None
    ip: str | None = None
    thread: int = 0
    #: a Started line: the thread shows its previous address
    started: bool = False


@dataclass
class Log:
    rnd: random.Random
    lines: list[Line] = field(default_factory=list)
    truth: list[dict[str, object]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: (
            {"malformed line": 0, "unknown user": 0, "unknown unit": 0} | {"not marking": 0}
        )
    )
    order: int = 0
    requests: int = 0

    def add(
        self,
        at: datetime,
        message: str,
        *,
        ip: str | None = None,
        thread: int = 0,
        severity: str = "INFO",
        started: bool = False,
    ) -> None:
        self.order += 1
        self.lines.append(Line(at, self.order, severity, message, ip, thread, started))

    def thread(self) -> int:
        self.requests += 1
        return self.requests % THREADS

    def started(self, at: datetime, method: str, path: str, ip: str, thread: int) -> None:
        stamp = at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S %z")
        self.add(at, f'Started {method} "{path}" for {ip} at {stamp}', thread=thread, started=True)

    def request(
        self,
        at: datetime,
        method: str,
        path: str,
        ip: str,
        user: str | None,
        *,
        trigger: tuple[str, int] | None = None,
        comment: int | None = None,
        thread: int | None = None,
        offset: int = 0,
    ) -> None:
        """One Grape request: Started, its user, and what it logs. ``offset`` spreads two
        interleaved requests' own lines apart in the order they are written."""
        t = self.thread() if thread is None else thread
        self.started(at, method, path, ip, t)
        if user is None:
            return
        later = at + STEP * (1 + offset)
        self.add(later, f"Authenticated {user} from {ip}", ip=ip, thread=t)
        if trigger is not None:
            task, status = trigger[1], trigger[0]
            self.add(later + STEP * 2, f"{user} assessing task {task} to {status}", ip=ip, thread=t)
        if comment is not None:
            abbr = ABBREVIATIONS[(comment - 1) % 3 + 1]
            self.add(
                later + STEP * 2,
                f"{user} - added comment for task {comment} ({abbr})",
                ip=ip,
                thread=t,
            )

    def activity(
        self,
        at: datetime,
        user_id: int,
        ip: str,
        action: str,
        ids: tuple[int | None, int | None, int | None],
        unit: int = 1,
    ) -> None:
        self.truth.append(
            {
                "marker_id": user_id,
                "unit_id": unit,
                "ip_address": ip,
                "action": action,
                "project_id": ids[0],
                "task_id": ids[1],
                "task_definition_id": ids[2],
                "created_at": at.replace(microsecond=0).astimezone(timezone.utc).isoformat(),
            }
        )

    # -- marking ---------------------------------------------------------------------------

    def marking(
        self, at: datetime, username: str, ip: str, *, thread: int | None = None, offset: int = 0
    ) -> None:
        """One marking request of a staff member, and the activity it must import as."""
        user_id = TUTORS[username][0]
        project, definition = self.rnd.randint(1, 4), self.rnd.randint(1, 3)
        task = 3 * (project - 1) + definition
        base = f"/api/projects/{project}/task_def_id/{definition}"
        kind = self.rnd.choice(
            ["inbox", "details", "files", "pdf", "assess", "assess", "comment", "comments", "batch"]
        )
        ids: tuple[int | None, int | None, int | None] = (project, task, definition)
        trigger = comment = None
        if kind == "inbox":
            method, path, action, ids = "GET", "/api/units/1/tasks/inbox", "inbox", (None,) * 3
        elif kind == "details":
            method, path, action = "GET", f"{base}/submission_details", "get-submission-details"
        elif kind == "files":
            method, path, action = "GET", f"{base}/submission_files", "get-submission-details"
        elif kind == "pdf":
            method, path, action = "GET", f"{base}/submission", "get-submission-details"
        elif kind == "assess":
            method, path, action = "PUT", base, "assessing"
            trigger = (self.rnd.choice(STAFF_TRIGGERS), task)
        elif kind == "comment":
            method, path, action = "POST", f"{base}/comments", "add-comment"
            comment = task
        elif kind == "comments":
            method, path, action = "GET", f"{base}/comments", "GET"
        else:  # the batch upload of marks: its unit is in the body
            method, path, action, ids = "POST", "/api/submission/assess/", "PUT", (None,) * 3
        self.request(
            at,
            method,
            path,
            ip,
            username,
            trigger=trigger,
            comment=comment,
            thread=thread,
            offset=offset,
        )
        if user_id is None:
            self.counts["unknown user"] += 1
        else:
            self.activity(at, user_id, ip, action, ids)

    def sitting(self, start: datetime, username: str) -> datetime:
        ip = self.rnd.choice(TUTORS[username][1])
        at = start
        # the first request names the unit, so a batch upload later in the sitting has one
        self.request(at, "GET", "/api/units/1/tasks/inbox", ip, username)
        user_id = TUTORS[username][0]
        if user_id is None:
            self.counts["unknown user"] += 1
        else:
            self.activity(at, user_id, ip, "inbox", (None, None, None))
        for _ in range(self.rnd.randint(3, 25)):
            at += timedelta(seconds=self.rnd.choice([10, 30, 60, 120, 300, 480, 899, 900, 1200]))
            self.marking(at, username, ip)
            if self.rnd.random() < 0.3:
                self.noise(at + timedelta(seconds=2))
        return at

    # -- what is no tutor's marking ----------------------------------------------------------

    def noise(self, at: datetime) -> None:
        choice = self.rnd.randrange(11)
        student = self.rnd.randint(1, 4)
        sip = f"10.30.1.{student}"
        if choice == 0:  # a student's own status change: logged, never a tutor's activity
            task = 3 * (student - 1) + 1
            self.request(
                at,
                "PUT",
                f"/api/projects/{student}/task_def_id/1",
                sip,
                f"student{student}",
                trigger=(self.rnd.choice(STUDENT_TRIGGERS), task),
            )
            self.counts["not marking"] += 1
        elif choice == 1:  # a student tries a staff trigger: logged before the role check
            task = 3 * (student - 1) + 2
            self.request(
                at,
                "PUT",
                f"/api/projects/{student}/task_def_id/2",
                sip,
                f"student{student}",
                trigger=("complete", task),
            )
            self.counts["not marking"] += 1
        elif choice == 2:  # a student reads their own submission and its comments
            self.request(
                at,
                "GET",
                f"/api/projects/{student}/task_def_id/3/comments",
                sip,
                f"student{student}",
            )
            self.counts["not marking"] += 1
        elif choice == 3:  # a student's own pages: no marking route
            self.request(at, "GET", f"/api/projects/{student}", sip, f"student{student}")
            self.request(at, "GET", "/api/units/1", sip, f"student{student}")
        elif choice == 4:  # a routing error, logged as FATAL with its backtrace
            t = self.thread()
            self.started(at, "GET", "/wp-login.php", "198.51.100.9", t)
            self.add(
                at + STEP,
                "\nActionController::RoutingError (No route matches [GET]"
                ' "/wp-login.php"):\n  \nactionpack (7.1.3) lib/action_dispatch/'
                "middleware/debug_exceptions.rb:61:in `call'\nactionpack (7.1.3) lib/"
                "action_dispatch/middleware/show_exceptions.rb:32:in `call'",
                severity="FATAL",
                thread=t,
            )
        elif choice == 5:  # a login, then a token refresh
            t = self.thread()
            self.started(at, "POST", "/api/auth", sip, t)
            self.add(at + STEP, f"Login student{student} from {sip}", ip=sip, thread=t)
            t = self.thread()
            self.started(at + timedelta(seconds=1), "PUT", "/api/auth", sip, t)
            self.add(
                at + timedelta(seconds=1) + STEP,
                f"Update token 4f1c09a7e2 from {sip} for student{student}",
                ip=sip,
                thread=t,
            )
        elif choice == 6:  # an unhandled exception in the API
            t = self.thread()
            self.request(at, "GET", "/api/tasks", sip, f"student{student}", thread=t)
            self.add(
                at + STEP * 3,
                "Unhandled exception: NoMethodError",
                ip=sip,
                severity="ERROR",
                thread=t,
            )
            self.add(
                at + STEP * 4,
                "#<NoMethodError: undefined method `id' for nil:NilClass"
                "\napp/api/tasks_api.rb:31:in `block in <class:TasksApi>'>",
                ip=sip,
                severity="ERROR",
                thread=t,
            )
        elif choice == 7:  # a Rails controller: a file download, with Processing and Completed
            t = self.thread()
            self.started(at, "GET", "/api/submission/unit/1/portfolio/7", sip, t)
            self.add(
                at + STEP,
                "Processing by PortfolioDownloadsController#index as HTML",
                ip=sip,
                thread=t,
            )
            self.add(
                at + STEP * 2, "Completed 200 OK in 12ms (ActiveRecord: 2.1ms)", ip=sip, thread=t
            )
        elif choice == 8:  # an expired token on a marking route: it answers 419
            t = self.thread()
            ip = TUTORS["tutor2"][1][0]
            self.started(at, "GET", "/api/units/1/tasks/inbox", ip, t)
            self.add(at + STEP, f"Timing out token for tutor2 from {ip}", ip=ip, thread=t)
        elif choice == 9:  # a tutor sets a student's status: no assessment
            task = 3 * (student - 1) + 3
            self.request(
                at,
                "PUT",
                f"/api/projects/{student}/task_def_id/3",
                "10.20.0.12",
                "tutor2",
                trigger=("working_on_it", task),
            )
            self.counts["not marking"] += 1
        else:  # an unreadable Started line
            self.add(at, 'Started GET "/api/units/1/tasks/inbox" for 10.20.0.11 at yesterday')
            self.counts["malformed line"] += 1

    def interleaved(self, at: datetime) -> None:
        """tutor1 and convenor at the same second on two threads: their lines cross."""
        self.marking(at, "tutor1", TUTORS["tutor1"][1][0], thread=1, offset=2)
        self.marking(at, "convenor", TUTORS["convenor"][1][0], thread=2, offset=0)

    # -- writing ---------------------------------------------------------------------------

    def render(self, modern: bool) -> str:
        """The lines in time order, as the layout writes them."""
        shown = ["unknown"] * THREADS
        out = []
        for line in sorted(self.lines, key=lambda x: (x.at, x.order)):
            message = line.message
            if not modern:
                out.append(message.replace("\\n", "\n"))
                continue
            ip = shown[line.thread] if line.started or line.ip is None else line.ip
            if line.ip is not None:
                shown[line.thread] = line.ip
            stamp = line.at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S %z")
            out.append(f"{stamp},{ip},{line.severity}: " + message.replace("\n", "\\n"))
        return "".join(text + "\n" for text in out)

    def write(self, name: str, modern: bool) -> None:
        (HERE / f"{name}.log").write_text(self.render(modern))
        with open(HERE / f"{name}.expected.csv", "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(self.truth[0]))
            writer.writeheader()
            writer.writerows(self.truth)
        read = len(self.truth) + sum(self.counts.values())
        counts = {reason: n for reason, n in self.counts.items() if n}
        summary = {"read": read, "imported": len(self.truth), "skipped": counts}
        (HERE / f"{name}.expected.json").write_text(json.dumps(summary, indent=2) + "\n")


def week(seed: int, day0: datetime) -> Log:
    rnd = random.Random(seed)
    log = Log(rnd)
    # a batch upload before the tutor's first request: nothing names its unit
    first = day0 + timedelta(hours=7)
    log.request(first, "POST", "/api/submission/assess/", "10.20.0.99", "tutor2")
    log.counts["unknown unit"] += 1
    for day in range(5):
        for username in TUTORS:
            for _ in range(rnd.randint(0, 2)):
                start = day0 + timedelta(
                    days=day, hours=rnd.randint(8, 20), minutes=rnd.randint(0, 59)
                )
                log.sitting(start, username)
        log.interleaved(day0 + timedelta(days=day, hours=21, seconds=rnd.randint(0, 3000)))
    return log


def across_the_change(log: Log, night: datetime) -> None:
    """convenor marking through the night the clocks go back: 02:40 +1100 … 02:10 +1000."""
    at = night
    for _ in range(8):
        log.marking(at, "convenor", "10.20.0.3")
        at += timedelta(minutes=7)


def main() -> None:
    # Melbourne's daylight-saving time ended on 7 April 2024 and on 4 April 2021, at 03:00
    modern = week(14, datetime(2024, 4, 3, tzinfo=ZONE))
    across_the_change(modern, datetime(2024, 4, 6, 15, 40, tzinfo=timezone.utc))
    modern.write("ontrack-sample", modern=True)
    bare = week(21, datetime(2021, 3, 31, tzinfo=ZONE))
    across_the_change(bare, datetime(2021, 4, 3, 15, 40, tzinfo=timezone.utc))
    bare.write("ontrack-sample-2021", modern=False)


if __name__ == "__main__":
    main()
