"""How the host plugs in: callbacks registered with decorators on the extension."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from .constants import TRACKED_ROLES
from .errors import ConfigurationError, InvalidActivityError

#: (user, unit_id) -> "admin" | "convenor" | "tutor" | "student" | None
RoleLoader = Callable[[Any, Any], "str | None"]
#: (user) -> whether the user runs the site (may read /metrics without a token)
StaffLoader = Callable[[Any], bool]
#: (unit_id, project_id, task_id, task_definition_id) -> whether the ids are that unit's
TargetLoader = Callable[[int, "int | None", "int | None", "int | None"], bool]
#: (user ids) -> their display names; ids it leaves out are shown by number
NameLoader = Callable[[list[int]], Mapping[int, str]]


class HostHooks:
    """The host's answers to who may do what, as registered callbacks."""

    def __init__(self) -> None:
        self._role_loader: RoleLoader | None = None
        self._target_loader: TargetLoader | None = None
        self._staff_loader: StaffLoader | None = None
        self._name_loader: NameLoader | None = None

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
