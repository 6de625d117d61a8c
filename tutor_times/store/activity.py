"""One marking action, its fields listed once, with the checks every path applies to them.

The decorator, the tracker, the stores and the endpoints all build or read an
:class:`Activity`; adding a column means adding it to the model, the migration and here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from ..core.accounting import UTC
from ..core.constants import BIGINT_MAX
from ..core.errors import InvalidActivityError, UnknownActionError
from .models import SERVER, SOURCES


def check_action(action: object, actions: Collection[str]) -> str:
    """R8: only the configured actions are recorded."""
    if not isinstance(action, str) or action not in actions:
        raise UnknownActionError(
            f"unknown action {action!r}; allowed: {', '.join(sorted(actions))}",
            field="action",
        )
    return action


def check_id(value: object, field: str, *, required: bool) -> int | None:
    """A positive 64-bit integer; a bool is not a number here, nor is a numeric string."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= BIGINT_MAX:
        raise InvalidActivityError(
            f"{field} must be a positive integer, got {value!r}", field=field
        )
    return value


def check_ip(value: object) -> str:
    """An IPv4 or IPv6 address in its normal form.

    A scope id (``fe80::1%eth0``) is refused: it is free text naming an interface of the
    peer's machine, and it would make one address many keys.
    """
    try:
        if not isinstance(value, str):  # ip_address() would take an int as an address
            raise ValueError
        address = ipaddress.ip_address(value)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise ValueError
        return str(address)
    except ValueError:
        raise InvalidActivityError(
            f"ip_address must be an IPv4 or IPv6 address, got {value!r}"[:200],
            field="ip_address",
        ) from None


def check_time(at: object) -> datetime:
    """An aware datetime, in UTC."""
    if not isinstance(at, datetime):
        raise InvalidActivityError(f"at must be a datetime, got {at!r}", field="at")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidActivityError(
            "at must be an aware datetime (with a time zone), got a naive one", field="at"
        )
    try:
        return at.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00 lies before year 1 in UTC
        raise InvalidActivityError("at is out of range", field="at") from None


@dataclass(frozen=True)
class Activity:
    """A checked activity, ready to be placed in its session and stored."""

    action: str
    marker_id: int
    unit_id: int
    #: already in its stored form (TUTOR_TIMES_IP_STORAGE)
    ip_address: str
    project_id: int | None
    task_id: int | None
    task_definition_id: int | None
    #: when it happened, in UTC
    at: datetime
    #: "server" or "client" (R11)
    source: str = SERVER

    @classmethod
    def checked(
        cls,
        action: object,
        *,
        marker_id: object,
        unit_id: object,
        ip_address: object,
        project_id: object = None,
        task_id: object = None,
        task_definition_id: object = None,
        at: object,
        source: str = SERVER,
        actions: Collection[str],
        ip_policy: Callable[[str], str] = str,
    ) -> Activity:
        """Every check of the fields themselves; the rules about time live in the tracker."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        return cls(
            action=check_action(action, actions),
            marker_id=check_id(marker_id, "marker_id", required=True),  # type: ignore[arg-type]
            unit_id=check_id(unit_id, "unit_id", required=True),  # type: ignore[arg-type]
            ip_address=ip_policy(check_ip(ip_address)),
            project_id=check_id(project_id, "project_id", required=False),
            task_id=check_id(task_id, "task_id", required=False),
            task_definition_id=check_id(task_definition_id, "task_definition_id", required=False),
            at=check_time(at),
            source=source,
        )

    @property
    def key(self) -> tuple[int, int, str]:
        """R1: the session key."""
        return self.marker_id, self.unit_id, self.ip_address

    def params(self) -> dict[str, Any]:
        """Every field by name, as bind parameters. (Not ``dataclasses.asdict``: it deep-copies
        each value, a tenth of a millisecond on the hot path.)"""
        return dict(self.__dict__)

    def row(self, activity_id: int, session_id: int) -> dict[str, Any]:
        """The stored row's columns."""
        return {
            "id": activity_id,
            "marking_session_id": session_id,
            **{name: getattr(self, name) for name in STORED_FIELDS},
            "created_at": self.at,
            "updated_at": self.at,
        }


#: the fields stored as columns of session_activities under their own names
STORED_FIELDS = ("action", "project_id", "task_id", "task_definition_id", "source")
#: every field of an activity
FIELDS = tuple(f.name for f in fields(Activity))
