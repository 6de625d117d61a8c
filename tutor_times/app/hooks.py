"""How the host plugs in: callbacks registered with decorators on the extension."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.constants import TRACKED_ROLES
from ..core.errors import ConfigurationError, InvalidActivityError
from ..store.class_times import Memo, Timetable, spans_of

if TYPE_CHECKING:
    from ..history.sources import LogTarget

#: (user, unit_id) -> "admin" | "convenor" | "tutor" | "student" | None
RoleLoader = Callable[[Any, Any], "str | None"]
#: (user) -> whether the user runs the site (may read /metrics without a token)
StaffLoader = Callable[[Any], bool]
#: (unit_id, project_id, task_id, task_definition_id) -> whether the ids are that unit's
TargetLoader = Callable[[int, "int | None", "int | None", "int | None"], bool]
#: (user ids) -> their display names; ids it leaves out are shown by number
NameLoader = Callable[[list[int]], Mapping[int, str]]
#: (unit ids) -> their display names (a code and a title); ids it leaves out are "Unit N"
UnitNameLoader = Callable[[list[int]], Mapping[int, str]]
#: (HTTP method, request path without its query string) -> what the request did, or None
#: when it was no marking (an import of a web-server log skips it)
LogPathResolver = Callable[[str, str], "LogTarget | None"]
#: (unit_id, start, end) -> the unit's scheduled classes in [start, end), each
#: (marker_id or None for every tutor of the unit, start, end) as aware datetimes
ClassTimesLoader = Callable[
    [int, datetime, datetime], Iterable[tuple["int | None", datetime, datetime]]
]
#: (unit_id, marker_id or None for the whole unit) -> how many students; None when unknown
StudentCountLoader = Callable[[int, "int | None"], "int | None"]
#: a username as the web-server log names it -> the user (the object the role_loader takes,
#: with an ``id``, or the id itself when the role_loader takes ids), or None when unknown
UsernameResolver = Callable[[str], Any]


class HostHooks:
    """The host's answers to who may do what, as registered callbacks."""

    def __init__(self) -> None:
        self._role_loader: RoleLoader | None = None
        self._target_loader: TargetLoader | None = None
        self._staff_loader: StaffLoader | None = None
        self._name_loader: NameLoader | None = None
        self._unit_name_loader: UnitNameLoader | None = None
        self._log_path_resolver: LogPathResolver | None = None
        self._username_resolver: UsernameResolver | None = None
        self._class_times_loader: ClassTimesLoader | None = None
        self._student_count_loader: StudentCountLoader | None = None
        self._timetables = Memo()

    def role_loader(self, callback: RoleLoader) -> RoleLoader:
        """Register ``callback(user, unit_id)`` -> "admin" | "convenor" | "tutor" | "student" | None."""
        self._role_loader = callback
        return callback

    def target_loader(self, callback: TargetLoader) -> TargetLoader:
        """Register ``callback(unit_id, project_id, task_id, task_definition_id)`` -> whether
        every id given (the others are None) belongs to that unit.

        Only what a client reports itself (``POST /activities``) is checked this way (R11);
        without a loader, a client may report no project, task or task definition ids.
        """
        self._target_loader = callback
        return callback

    def staff_loader(self, callback: StaffLoader) -> StaffLoader:
        """Register ``callback(user)`` -> whether the user runs the site: such a signed-in
        user may read ``/metrics`` without the bearer token. Without it, only the token does."""
        self._staff_loader = callback
        return callback

    def is_staff(self, user: Any) -> bool:
        return self._staff_loader is not None and bool(self._staff_loader(user))

    def name_loader(self, callback: NameLoader) -> NameLoader:
        """Register ``callback(user_ids)`` -> {user_id: display name}, for the dashboard.

        Called once per page with every id the page shows, so one query can answer it.
        Without a loader, tutors are shown by their id (``#3``).
        """
        self._name_loader = callback
        return callback

    def names_of(self, user_ids: Collection[int]) -> dict[int, str]:
        """Each id's display name: the host's, else ``#id``."""
        ids = sorted(set(user_ids))
        found = dict(self._name_loader(ids)) if self._name_loader and ids else {}
        return {i: str(found.get(i) or f"#{i}") for i in ids}

    def unit_name_loader(self, callback: UnitNameLoader) -> UnitNameLoader:
        """Register ``callback(unit_ids)`` -> {unit_id: display name}, for the dashboard's
        title and headings. Without a loader, a unit is shown as ``Unit 3``.
        """
        self._unit_name_loader = callback
        return callback

    def unit_names_of(self, unit_ids: Collection[int]) -> dict[int, str]:
        """Each unit's display name: the host's, else ``Unit id``."""
        ids = sorted(set(unit_ids))
        found = dict(self._unit_name_loader(ids)) if self._unit_name_loader and ids else {}
        return {i: str(found.get(i) or f"Unit {i}") for i in ids}

    def class_times_loader(self, callback: ClassTimesLoader) -> ClassTimesLoader:
        """Register ``callback(unit_id, start, end)`` -> the unit's scheduled classes
        (tutorials, labs) in [start, end), each ``(marker_id, start, end)``: the class's
        tutor, or None for a class of every tutor of the unit, and its real start and end
        as aware datetimes.

        Called once per unit a report shows (never while tracking). With it, every report
        that shows minutes splits them into during-class and outside-class minutes (R12);
        without it, the split is absent.
        """
        self._class_times_loader = callback
        return callback

    @property
    def has_class_times(self) -> bool:
        return self._class_times_loader is not None

    def _loaded_classes(self, unit_id: int, start: datetime, end: datetime) -> tuple[Any, ...]:
        """The host loader's rows for the unit and range, unchecked."""
        if self._class_times_loader is None:
            raise ConfigurationError(
                "No class_times_loader registered: decorate a function (unit_id, start, end)"
                " -> [(marker_id | None, start, end), ...] with @tutor_times.class_times_loader"
            )
        return tuple(self._class_times_loader(unit_id, start, end))

    def unit_timetable(self, unit_id: int, start: datetime, end: datetime) -> Timetable:
        """The unit's classes in [start, end), by tutor, for a report of the unit (R12)."""
        answer = self._loaded_classes(unit_id, start, end)

        def build() -> Timetable:
            return Timetable.of_unit(spans_of(answer, unit_id))

        return self._timetables.get(("unit", unit_id), answer, build)

    def marker_timetable(
        self, marker_id: int, units: Collection[int], start: datetime, end: datetime
    ) -> Timetable:
        """One tutor's classes in each of ``units``, for their own report across units."""
        ordered = sorted(set(units))
        answers = tuple(self._loaded_classes(unit, start, end) for unit in ordered)

        def build() -> Timetable:
            spans = {u: spans_of(a, u) for u, a in zip(ordered, answers, strict=True)}
            return Timetable.of_marker(marker_id, spans)

        return self._timetables.get(("tutor", marker_id, *ordered), answers, build)

    def student_count_loader(self, callback: StudentCountLoader) -> StudentCountLoader:
        """Register ``callback(unit_id, marker_id)`` -> how many students the tutor marks for
        in the unit (``marker_id`` None: the whole unit's students), or None when unknown.

        With it, the summary adds ``students`` and ``minutes_per_student`` to each tutor's
        row and to the totals; without it, they are absent.
        """
        self._student_count_loader = callback
        return callback

    @property
    def has_student_counts(self) -> bool:
        return self._student_count_loader is not None

    def students_of(self, unit_id: int, marker_id: int | None) -> int | None:
        if self._student_count_loader is None:
            raise ConfigurationError(
                "No student_count_loader registered: decorate a function (unit_id, marker_id)"
                " -> int | None with @tutor_times.student_count_loader"
            )
        found = self._student_count_loader(unit_id, marker_id)
        if found is not None and (isinstance(found, bool) or not isinstance(found, int)):
            raise ConfigurationError(
                f"student_count_loader must return a whole number or None, got {found!r}"
            )
        return found

    def forget_workload_loaders(self) -> None:
        """Unregister the class_times_loader and the student_count_loader: the reports go
        back to no split and no students (an app factory that builds apps with and without
        a timetable)."""
        self._class_times_loader = None
        self._student_count_loader = None

    def log_path_resolver(self, callback: LogPathResolver) -> LogPathResolver:
        """Register ``callback(method, path)`` -> a :class:`~tutor_times.history.sources.LogTarget`
        (unit, action, the project, task and task definition ids of the request, and the
        project's owner), or None for a request that was no marking; a unit of None when
        the route's unit is not in its path. Needed to import ``--format ontrack-log``: the log
        names only paths, as the host's routes see them (``/api/units/1/tasks/inbox``)."""
        self._log_path_resolver = callback
        return callback

    def username_resolver(self, callback: UsernameResolver) -> UsernameResolver:
        """Register ``callback(username)`` -> the user, or None when no user has that name:
        the object the ``role_loader`` takes (with an ``id``), or the id when the
        ``role_loader`` takes ids — an import asks the role_loader whether the user is the
        unit's staff (R7). Needed to import ``--format ontrack-log``, whose lines name users
        by username."""
        self._username_resolver = callback
        return callback

    def log_resolvers(self) -> tuple[LogPathResolver, UsernameResolver]:
        """Both hooks of a log import; a clear error names the one missing."""
        if self._log_path_resolver is None:
            raise ConfigurationError(
                "No log_path_resolver registered: decorate a function (method, path) ->"
                " LogTarget | None with @tutor_times.log_path_resolver"
            )
        if self._username_resolver is None:
            raise ConfigurationError(
                "No username_resolver registered: decorate a function (username) -> user id"
                " | None with @tutor_times.username_resolver"
            )
        return self._log_path_resolver, self._username_resolver

    def role_of(self, user: Any, unit_id: Any) -> str | None:
        if self._role_loader is None:
            raise ConfigurationError(
                "No role_loader registered: decorate a function (user, unit_id) -> role with"
                " @tutor_times.role_loader"
            )
        return self._role_loader(user, unit_id)

    def is_tracked_role(self, user: Any, unit_id: Any) -> bool:
        """R7: only the unit's tutors, convenors and admins are tracked."""
        return self.role_of(user, unit_id) in TRACKED_ROLES

    def confirm_targets(
        self,
        unit_id: int,
        project_id: int | None,
        task_id: int | None,
        task_definition_id: int | None,
    ) -> None:
        """R11: ids a client reports must be confirmed by the host as the unit's."""
        ids = {
            "project_id": project_id,
            "task_id": task_id,
            "task_definition_id": task_definition_id,
        }
        named = [name for name, value in ids.items() if value is not None]
        if not named:
            return
        if self._target_loader is None:
            raise InvalidActivityError(
                f"{named[0]}: this server cannot confirm ids (no target_loader is registered)",
                field=named[0],
            )
        if not self._target_loader(unit_id, project_id, task_id, task_definition_id):
            raise InvalidActivityError(
                f"{', '.join(named)}: not found in unit {unit_id}", field=named[0]
            )

    def check_client_report(
        self, action: str, unit_id: int, allowed: Collection[str], ids: Mapping[str, Any]
    ) -> None:
        """R11: a client may report only the allowed actions, about ids the host confirms."""
        if not allowed:
            # the host's TUTOR_TIMES_ACTIONS holds none of the default client actions, or it
            # chose none: say so, rather than list an empty set of allowed actions
            raise InvalidActivityError(
                "this server accepts no client-reported actions"
                " (TUTOR_TIMES_CLIENT_ACTIONS allows none)",
                field="action",
            )
        if action not in allowed:
            raise InvalidActivityError(
                f"action {action!r} cannot be reported by a client;"
                f" allowed: {', '.join(sorted(allowed)) or 'none'}",
                field="action",
            )
        names = ("project_id", "task_id", "task_definition_id")
        self.confirm_targets(unit_id, *(ids.get(name) for name in names))

    @staticmethod
    def marker_id_of(user: Any) -> int:
        user_id = user.get_id()
        try:
            return int(user_id)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"the current user's get_id() must be an integer user id, got {user_id!r}"
            ) from None
