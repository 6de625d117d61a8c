"""OnTrack's web-server log, read as rows to import (``--format ontrack-log``).

doubtfire-api writes two layouts:

- since 2022 every line is ``<time>,<ip>,<SEVERITY>: <message>``, a message's newlines
  written as a literal ``\\n``; ``<ip>`` is the address the API's before-hook stored on the
  thread, so on a ``Started`` line (written before that hook) it is ``unknown`` or the
  previous request's;
- before, Rails' default formatter: the bare message.

Its API is Grape: a request writes ``Started <METHOD> "<path>" for <ip> at <time>`` (Rails'
``Rack::Logger``), then ``Authenticated <username> from <ip>`` once its token is checked, and
for a status change ``<username> assessing task <id> to <trigger>`` or for a comment
``<username> - added comment for task <id> (<abbr>)`` — and no ``Completed`` line. Lines carry
no request tag and the server's threads interleave them. So a request is tied to the lines
that follow it by its address and time: an ``Authenticated`` line goes to the earliest
request on its address still without a user, an ``assessing`` or ``added comment`` line to
the latest request of its user (on its address, when the layout names one). A request is
complete once the log has moved HORIZON past its start, and only then becomes a row; only
requests on routes the host's ``log_path_resolver`` calls marking are held at all, so memory
is bounded by the requests of HORIZON, whatever the file's size.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from ..core.constants import TRACKED_ROLES
from .rows import MALFORMED, NOT_MARKING, UNKNOWN_UNIT, UNKNOWN_USER, Rejected, Row
from .sources import LogTarget, path_and_username

#: how long after its start a request's own lines may still come (they come within
#: milliseconds: the user is checked first thing, the status change right after)
HORIZON = timedelta(seconds=60)
#: requests held at most (the oldest is completed first): a bound whatever the log holds
OPEN_REQUESTS = 10_000
#: paths and usernames whose resolution is remembered
RESOLVED = 8_192
#: lines looked at to tell whether a file is a log this reader knows
SNIFF_LINES = 1_000
#: unrecognised lines quoted in the error
QUOTED = 3

#: the layout since 2022: "2024-03-04 09:05:00 +1100,203.0.113.10,INFO: message"
PREFIXED = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}),([^,]*),([A-Z]+): ")
STARTED = re.compile(
    r'Started ([A-Z]+) "(.*)" for (\S+) at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\s*$'
)
AUTHENTICATED = re.compile(r"Authenticated (\S+) from (\S+)")
#: a token that failed or expired: the request answers 419, so it is no activity
REFUSED = re.compile(r"(?:Timing out token for \S+|Error logging in for .*) from (\S+)\s*$")
ASSESSING = re.compile(r"(\S+) assessing task (\d+) to (.*?)\s*$")
COMMENTED = re.compile(r"(\S+) - added comment for task (\d+) \(")
#: bare messages of a Rails or doubtfire-api log that say nothing to an import (noise that
#: tells the file's layout): Rails' request lines, indented detail, backtraces, blank lines
KNOWN_BARE = re.compile(
    r"(?:Started |Processing by |Completed |Redirected to |Sent (?:file|data) |Filter chain "
    r"|Rendered |Authenticate |Authenticated |Login |Sign out |Update token |Redirecting "
    r"|Get user via |Timing out token |Error logging in |\S+ assessing task "
    r"|\S+ - added comment |Unhandled exception|[A-Z]\w*(?:::\w+)+ \(|#<"
    r"|[\w-]+ \([\d.]+\) \S+:\d+:in |(?:app|lib|config)/\S+:\d+:in |\s|$)"
)

#: the triggers of a status change that only a unit's staff may perform (doubtfire-api's
#: TaskStatus.status_for_name, by the branch of Task#trigger_transition they reach: every
#: status but ready for feedback, not started, need help and working on it)
STAFF_TRIGGERS = frozenset(
    {
        "complete",
        "fix_and_resubmit",
        "fix and resubmit",
        "fix",
        "f",
        "do_not_resubmit",
        "do not resubmit",
        "feedback_exceeded",
        "feedback exceeded",
        "redo",
        "discuss",
        "d",
        "demonstrate",
        "demo",
        "fail",
        "time exceeded",
        "time_exceeded",
    }
)


class UnrecognisedLog(ValueError):
    """Most of the file is in no layout OnTrack writes."""


def describe_formats() -> str:
    """What each format reads, for the error of a file in none of them."""
    return (
        "--format ontrack-log reads doubtfire-api's log: lines '<time>,<ip>,<SEVERITY>:"
        " <message>' (since 2022) or Rails' bare messages ('Started GET \"/api/...\" for"
        " <ip> at <time>', before); --format csv reads one activity per row under a header"
        " of marker_id, unit_id, ip_address, action, project_id, task_id, task_definition_id,"
        " created_at; --format ontrack-db reads OnTrack's marking_sessions and"
        " session_activities tables exported as CSV"
    )


@dataclass(eq=False)
class Request:
    """A logged request of a marking route, and what its own lines said."""

    line: int
    method: str
    path: str
    ip: str
    at: datetime
    target: LogTarget
    user: str | None = None
    #: the trigger of its ``assessing`` line and the task it named
    trigger: str | None = None
    task: int | None = None
    refused: bool = False


#: (user, unit_id) -> whether the user is staff in the unit (R7)
StaffCheck = Callable[[Any, int], bool]


class OnTrackLog:
    """Rows from OnTrack's log, one per request of a marking route by the unit's staff.

    ``resolve_path(method, path)`` says what a request did (a LogTarget, or None when it
    was no marking); ``resolve_username(name)`` gives the host's user (an id, or the object
    its ``role_loader`` takes, with an ``id``), or None; ``is_staff(user, unit_id)`` is R7.
    A LogTarget whose ``unit_id`` is None (a route whose unit is in the request's body, such
    as the batch upload of marks) takes the unit of the same user's previous request.
    """

    def __init__(
        self,
        resolve_path: Callable[[str, str], LogTarget | None],
        resolve_username: Callable[[str], Any],
        is_staff: StaffCheck,
    ) -> None:
        # Marking paths and usernames repeat in a log: each is resolved once. Only marking
        # paths are remembered: the rest (students' own pages, each seen once) would churn
        # the cache, and memory with it.
        self.resolve_any_path = resolve_path
        self.marking: dict[tuple[str, str], LogTarget] = {}
        self.resolve_username = lru_cache(maxsize=RESOLVED)(resolve_username)
        self.is_staff = is_staff
        #: (user id, unit id) -> whether staff: asked once per pair (bounded)
        self.staff: dict[tuple[int, int], bool] = {}
        #: requests not yet complete, in the order they started
        self.open: OrderedDict[int, Request] = OrderedDict()
        #: per address, its open requests still without a user, oldest first
        self.waiting: dict[str, deque[Request]] = {}
        #: per username, its open requests, latest last
        self.mine: dict[str, list[Request]] = {}
        #: (username, address) -> the unit of its latest request (bounded)
        self.last_unit: OrderedDict[tuple[str, str], int] = OrderedDict()

    # -- reading ---------------------------------------------------------------------------

    def rows(self, text: Iterable[str]) -> Iterator[Row]:
        sniff = Sniffer()
        clock: datetime | None = None
        for number, raw in enumerate(text, start=1):
            prefixed = PREFIXED.match(raw)
            if prefixed is not None:
                message = raw[prefixed.end() :]
                address: str | None = prefixed[2]
            else:
                message = raw
                address = None
            if number <= SNIFF_LINES:
                sniff.line(number, raw, prefixed is not None)
                if number == SNIFF_LINES:
                    sniff.verdict()
            if message.startswith("Started "):
                started = STARTED.match(message)
                if started is None:
                    yield Rejected(MALFORMED, f"line {number}: an unreadable Started line")
                    continue
                try:
                    at = datetime.fromisoformat(started[4])
                except ValueError:
                    yield Rejected(MALFORMED, f"line {number}: a time out of the calendar")
                    continue
                clock = at if clock is None or at > clock else clock
                yield from self._complete(clock - HORIZON)
                self._started(number, started, at)
            elif not self.open:
                continue  # nothing to attach a line to: every other line is noise
            elif message.startswith("Authenticated "):
                if match := AUTHENTICATED.match(message):
                    self._authenticated(match[1], match[2])
            elif " assessing task " in message:
                if match := ASSESSING.match(message):
                    self._assessing(match[1], int(match[2]), match[3], address)
            elif " - added comment for task " in message:
                if match := COMMENTED.match(message):
                    self._commented(match[1], int(match[2]), address)
            elif message.startswith(("Timing out token ", "Error logging in ")):
                if match := REFUSED.match(message):
                    self._refused(match[1])
        sniff.verdict()
        yield from self._complete(None)

    # -- the lines of a request ------------------------------------------------------------

    def resolve_path(self, method: str, path: str) -> LogTarget | None:
        target = self.marking.get((method, path))
        if target is None:
            target = self.resolve_any_path(method, path)
            if target is not None:
                if len(self.marking) >= RESOLVED:
                    self.marking.clear()
                self.marking[method, path] = target
        return target

    def _started(self, number: int, match: re.Match[str], at: datetime) -> None:
        method = match[1]
        path, _ = path_and_username(match[2])
        target = self.resolve_path(method, path)
        if target is None:
            return  # no marking: nothing of it is kept
        request = Request(number, method, path, match[3], at, target)
        self.open[number] = request
        self.waiting.setdefault(request.ip, deque()).append(request)

    def _authenticated(self, user: str, address: str) -> None:
        queue = self.waiting.get(address)
        if not queue:
            return  # a request of a route that is no marking
        request = queue.popleft()
        if not queue:
            del self.waiting[address]
        request.user = user
        self.mine.setdefault(user, []).append(request)

    def _refused(self, address: str) -> None:
        queue = self.waiting.get(address)
        if queue:
            queue[0].refused = True
            self._authenticated("", address)

    def _latest_of(self, user: str, address: str | None, method: str) -> Request | None:
        """The user's latest open request of this method (on this address when known)."""
        for request in reversed(self.mine.get(user, ())):
            if request.method == method and (address is None or request.ip == address):
                return request
        return None

    def _assessing(self, user: str, task: int, trigger: str, address: str | None) -> None:
        request = self._latest_of(user, address, "PUT")
        if request is not None and request.trigger is None:
            request.trigger = trigger.strip().lower()
            request.task = task

    def _commented(self, user: str, task: int, address: str | None) -> None:
        request = self._latest_of(user, address, "POST")
        if request is not None and request.task is None:
            request.task = task

    # -- complete requests as rows ---------------------------------------------------------

    def _complete(self, before: datetime | None) -> Iterator[Row]:
        """Rows of the requests that started before ``before`` (every one when None), or
        beyond OPEN_REQUESTS, in the order they started."""
        open_ = self.open
        while open_:
            request = next(iter(open_.values()))
            if before is not None and request.at >= before and len(open_) <= OPEN_REQUESTS:
                return
            del open_[request.line]
            self._forget(request)
            row = self._row(request)
            if row is not None:
                yield row

    def _forget(self, request: Request) -> None:
        queue = self.waiting.get(request.ip)
        if queue and request in queue:
            queue.remove(request)
            if not queue:
                del self.waiting[request.ip]
        if request.user is not None:
            mine = self.mine.get(request.user)
            if mine is not None:
                mine.remove(request)
                if not mine:
                    del self.mine[request.user]

    def _row(self, request: Request) -> Row | None:
        at = f"line {request.line}"
        if request.refused:
            return None  # answered 419: no activity, as live tracking records none
        if not request.user:
            return Rejected(UNKNOWN_USER, f"{at}: no Authenticated line follows the request")
        target = request.target
        action = target.action
        task = target.task_id
        if request.trigger is not None:
            if request.trigger not in STAFF_TRIGGERS:
                return Rejected(NOT_MARKING, f"{at}: a status change to {request.trigger!r}")
            action, task = "assessing", request.task
        elif request.task is not None and task is None:
            task = request.task
        user = self.resolve_username(request.user)
        if user is None:
            return Rejected(UNKNOWN_USER, f"{at}: {request.user!r}")
        user_id = user if isinstance(user, int) else user.id
        unit = target.unit_id
        where = (request.user, request.ip)
        if unit is None:
            unit = self.last_unit.get(where)
            if unit is None:
                return Rejected(UNKNOWN_UNIT, f"{at}: no earlier request names the unit")
        else:
            self.last_unit[where] = unit
            self.last_unit.move_to_end(where)
            if len(self.last_unit) > OPEN_REQUESTS:
                self.last_unit.popitem(last=False)
        staff = self.staff.get((user_id, unit))
        if staff is None:
            if len(self.staff) >= OPEN_REQUESTS:
                self.staff.clear()
            staff = self.staff[user_id, unit] = self.is_staff(user, unit)
        if not staff:
            return Rejected(NOT_MARKING, f"{at}: {request.user!r} is not staff in unit {unit}")
        if target.owner_id is not None and target.owner_id == user_id:
            return Rejected(NOT_MARKING, f"{at}: {request.user!r} on their own project")
        return (
            user_id,
            unit,
            request.ip,
            action,
            target.project_id,
            task,
            target.task_definition_id,
            request.at,
            request.line,
        )


class Sniffer:
    """Tells, from a file's first lines, whether it is a log this reader knows."""

    def __init__(self) -> None:
        self.seen = 0
        self.unknown = 0
        self.quoted: list[str] = []
        self.decided = False

    def line(self, number: int, raw: str, prefixed: bool) -> None:
        self.seen = number
        if prefixed or KNOWN_BARE.match(raw):
            return
        self.unknown += 1
        if len(self.quoted) < QUOTED:
            self.quoted.append(f"line {number}: {raw.rstrip()[:120]!r}")

    def verdict(self) -> None:
        """Raises UnrecognisedLog when most lines seen are in neither layout."""
        if self.decided:
            return
        self.decided = True
        if self.seen and self.unknown * 2 > self.seen:
            raise UnrecognisedLog(
                f"{self.unknown} of its first {self.seen} lines are in no layout OnTrack"
                f" writes. {describe_formats()}. The first lines not recognised: "
                + "; ".join(self.quoted)
            )


def staff_check(role_of: Callable[[Any, Any], str | None]) -> StaffCheck:
    """R7 through the host's role hook: tutors, convenors and admins are staff."""

    def is_staff(user: Any, unit_id: int) -> bool:
        return role_of(user, unit_id) in TRACKED_ROLES

    return is_staff
