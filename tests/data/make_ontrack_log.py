"""Writes the sample OnTrack log of the import tests, with what it holds, from a fixed seed.

``python -m tests.data.make_ontrack_log`` rewrites ontrack-sample.log (the log, noise
included), ontrack-sample.expected.csv (every activity the log holds, one per row, the
ground truth of the tests) and ontrack-sample.expected.json (what an import must count).
The demo's ids: users admin 1, convenor 2, tutor1 3, tutor2 4, students 5-8, tutor9 9;
unit 1 has projects 1-4 with task definitions 1-3 (task id = 3 * (project - 1) + definition);
unit 2 has none.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ZONE = timezone(timedelta(hours=11))
DAY0 = datetime(2024, 3, 4, tzinfo=ZONE)
#: username -> (user id, units, addresses)
TUTORS = {
    "tutor1": (3, [1, 1, 2], ["10.20.0.11", "203.0.113.7"]),
    "tutor2": (4, [1], ["10.20.0.12"]),
    "convenor": (2, [1], ["10.20.0.2", "10.20.0.3"]),
    "tutor9": (9, [2], ["198.51.100.23"]),
    "casual7": (None, [1], ["10.20.0.77"]),  # no such user in the demo
}
NOISE = [
    "Processing by Api::Root#call as JSON",
    '  Parameters: {"auth_token"=>"[FILTERED]"}',
    '  User Load (0.4ms)  SELECT "users".* FROM "users" WHERE "users"."username" = $1',
    "  Rendered text template (0.0ms)",
    "",
]


class Log:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.lines: list[tuple[datetime, int, str]] = []  # (time, order, text)
        self.truth: list[dict[str, object]] = []
        self.counts = {"malformed line": 0, "unknown unit": 0, "unknown user": 0}
        self.order = 0

    def add(self, at: datetime, text: str) -> None:
        local = at.strftime("%Y-%m-%dT%H:%M:%S.%f")
        self.order += 1
        self.lines.append((at, self.order, f"I, [{local} #4242]  INFO -- : {text}"))

    def request(
        self,
        at: datetime,
        method: str,
        path: str,
        ip: str,
        *,
        status: int = 200,
        assessed: int | None = None,
        user: str | None = None,
        stamp: str | None = None,
        complete: bool = True,
    ) -> str:
        tag = f"[{self.rnd.getrandbits(40):010x}]"
        query = f"?username={user}" if user else ""
        stamp = stamp or at.strftime("%Y-%m-%d %H:%M:%S %z")
        self.add(at, f'{tag} Started {method} "{path}{query}" for {ip} at {stamp}')
        step = timedelta(milliseconds=20)
        self.add(at + step, f"{tag} {self.rnd.choice(NOISE[:4])}")
        if assessed is not None:
            self.add(at + 2 * step, f"{tag} {user} assessing task {assessed} to complete")
        if complete:
            reason = {200: "OK", 201: "Created", 401: "Unauthorized", 404: "Not Found"}[status]
            self.add(at + 3 * step, f"{tag} Completed {status} {reason} in 61ms")
        return tag

    def marking(self, at: datetime, username: str, unit: int, ip: str) -> None:
        """One marking request of a tutor, and the activity it must import as."""
        user_id = TUTORS[username][0]
        project, definition = self.rnd.randint(1, 4), self.rnd.randint(1, 3)
        task = 3 * (project - 1) + definition
        kind = self.rnd.choice(["inbox", "details", "assess", "comment", "unit"])
        if unit != 1 and kind in ("details", "assess", "comment"):
            kind = "inbox"  # unit 2 has no projects
        task_path = f"/api/projects/{project}/task_def_id/{definition}"
        method, path, action, ids = {
            "inbox": ("GET", f"/api/units/{unit}/tasks/inbox", "inbox", (None, None, None)),
            "unit": ("GET", f"/api/units/{unit}", "GET", (None, None, None)),
            "details": (
                "GET",
                f"{task_path}/submission_details",
                "get-submission-details",
                (project, task, definition),
            ),
            "assess": ("PUT", task_path, "assessing", (project, task, definition)),
            "comment": (
                "POST",
                f"{task_path}/comments",
                "add-comment",
                (project, task, definition),
            ),
        }[kind]
        self.request(
            at, method, path, ip, user=username, assessed=task if kind == "assess" else None
        )
        if user_id is None:
            self.counts["unknown user"] += 1
            return
        self.truth.append(
            {
                "marker_id": user_id,
                "unit_id": unit,
                "ip_address": ip,
                "action": action,
                "project_id": ids[0],
                "task_id": ids[1],
                "task_definition_id": ids[2],
                "created_at": at.replace(microsecond=0).isoformat(),
            }
        )

    def sitting(self, start: datetime, username: str) -> None:
        _, units, ips = TUTORS[username]
        unit, ip = self.rnd.choice(units), self.rnd.choice(ips)
        at = start
        for _ in range(self.rnd.randint(3, 30)):
            self.marking(at, username, unit, ip)
            gap = self.rnd.choice([10, 30, 60, 120, 300, 480, 899, 900, 1200])
            at += timedelta(seconds=gap + self.rnd.random())
            if self.rnd.random() < 0.1:
                self.noise(at - timedelta(seconds=3))

    def noise(self, at: datetime) -> None:
        """Requests that are no marking, that failed, or that cannot be read."""
        choice = self.rnd.randrange(6)
        if choice == 0:
            self.request(at, "GET", "/assets/application.js", "10.20.0.99")
        elif choice == 1:
            self.request(at, "GET", "/api/projects/2", "10.30.1.5", user="student2")
        elif choice == 2:
            self.request(
                at, "PUT", "/api/projects/1/task_def_id/1", "10.20.0.11", user="tutor1", status=401
            )
        elif choice == 3:
            self.request(at, "GET", "/api/units/77/tasks/inbox", "10.20.0.11", user="tutor1")
            self.counts["unknown unit"] += 1
        elif choice == 4:
            self.add(at, "Started GET for 10.20.0.11 at yesterday")
            self.counts["malformed line"] += 1
        else:
            self.add(at, self.rnd.choice(NOISE))

    def write(self) -> None:
        self.lines.sort()
        (HERE / "ontrack-sample.log").write_text("".join(text + "\n" for _, _, text in self.lines))
        with open(HERE / "ontrack-sample.expected.csv", "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(self.truth[0]))
            writer.writeheader()
            writer.writerows(self.truth)
        read = len(self.truth) + sum(self.counts.values())
        summary = {"read": read, "imported": len(self.truth), "skipped": self.counts}
        (HERE / "ontrack-sample.expected.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    rnd = random.Random(14)
    log = Log(rnd)
    for day in range(5):
        for username in TUTORS:
            for _ in range(rnd.randint(0, 2)):
                start = DAY0 + timedelta(
                    days=day, hours=rnd.randint(8, 20), minutes=rnd.randint(0, 59)
                )
                log.sitting(start, username)
    end = DAY0 + timedelta(days=5, hours=1)
    # a request the log ends before it completed, and one whose time is out of the calendar
    log.request(end, "GET", "/api/units/1/tasks/inbox", "10.20.0.12", user="tutor2", complete=False)
    log.request(
        end, "GET", "/api/units/1", "10.20.0.12", user="tutor2", stamp="2024-13-45 10:00:00 +1100"
    )
    log.counts["malformed line"] += 2
    log.write()


if __name__ == "__main__":
    main()
