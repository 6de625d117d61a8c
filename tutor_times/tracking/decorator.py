"""``@tutor_times.track(...)``: records the host view's marking action after it succeeds."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import sqlalchemy as sa
from flask import Flask, Response, after_this_request, request
from flask_login import current_user

from ..core import metrics
from ..core.errors import ConfigurationError
from ..store import idempotency

if TYPE_CHECKING:
    from ..app.services import Services

logger = logging.getLogger("tutor_times")

#: a view-argument name, a callable of the view's kwargs, or None
IdSpec = str | Callable[[Mapping[str, Any]], Any] | None
F = TypeVar("F", bound=Callable[..., Any])


#: the attribute a tracked view carries its spec in (functools.wraps copies it outward)
SPEC_ATTRIBUTE = "_tutor_times_track"


def resolve(spec: IdSpec, kwargs: Mapping[str, Any]) -> Any:
    """An id named by ``spec``. A view argument that is a decimal string — from a route
    declared ``<unit_id>`` rather than ``<int:unit_id>`` — is that number."""
    if spec is None:
        return None
    if callable(spec):
        return spec(kwargs)
    value = kwargs[spec]
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        return int(value)
    return value


def check_routes(app: Flask) -> None:
    """Every tracked view's view-argument names must be arguments of each of its routes:
    otherwise no request could ever be recorded, silently. Raises ConfigurationError."""
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions.get(rule.endpoint), SPEC_ATTRIBUTE, None)
        if not isinstance(spec, TrackSpec):
            continue
        for name in ("unit_id", "project_id", "task_id", "task_definition_id"):
            value = getattr(spec, name)
            if isinstance(value, str) and value not in rule.arguments:
                raise ConfigurationError(
                    f"@track({spec.action!r}, {name}={value!r}) on {rule.endpoint!r}: the route"
                    f" {rule.rule!r} has no argument {value!r}"
                    f" (it has: {', '.join(sorted(rule.arguments)) or 'none'})"
                )


def _check_spec(name: str, spec: object, *, required: bool = False) -> None:
    if spec is None and not required:
        return
    if not (isinstance(spec, str) or callable(spec)):
        raise TypeError(
            f"track({name}=...) takes a view-argument name or a callable of the view's kwargs,"
            f" got {spec!r}"
        )


@dataclass(frozen=True)
class TrackSpec:
    action: str
    unit_id: IdSpec
    project_id: IdSpec
    task_id: IdSpec
    task_definition_id: IdSpec
    when: Callable[[Mapping[str, Any]], Any] | None
    #: a request header whose value, per user, is recorded once (a retried PUT)
    idempotency_header: str | None = None

    def __post_init__(self) -> None:
        _check_spec("unit_id", self.unit_id, required=True)
        for name in ("project_id", "task_id", "task_definition_id", "when"):
            _check_spec(name, getattr(self, name))
        if isinstance(self.when, str):
            raise TypeError("track(when=...) takes a callable of the view's kwargs")
        if self.idempotency_header is not None and (
            not isinstance(self.idempotency_header, str) or not self.idempotency_header
        ):
            raise TypeError("track(idempotency_header=...) takes a header name")


def track_view(ext: Services, spec: TrackSpec) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rv = view(*args, **kwargs)

            # Registered only once the view has returned: a view that raised records nothing.
            @after_this_request
            def record(response: Response) -> Response:
                if response.status_code < 400:
                    started = time.perf_counter()
                    try:
                        track_request(ext, spec, kwargs)
                    except Exception:
                        # Fail open: tracking never changes the host's response (R9).
                        ext.count_failure()
                        logger.exception(
                            "could not record the %r activity of %s %s",
                            spec.action,
                            request.method,
                            request.path,
                        )
                    metrics.tracking_took(time.perf_counter() - started)
                return response

            return rv

        setattr(wrapper, SPEC_ATTRIBUTE, spec)
        return wrapper  # type: ignore[return-value]

    return decorator


@dataclass(frozen=True)
class Target:
    """What a tracked request did, as the host's callbacks say."""

    marker_id: int
    unit_id: Any
    project_id: Any
    task_id: Any
    task_definition_id: Any


def target_of(ext: Services, spec: TrackSpec, kwargs: Mapping[str, Any]) -> Target | None:
    """The request's marker and ids; None when it is not tracked (R7, ``when=``). The host's
    callbacks here may read its database."""
    user = current_user
    if user is None or not user.is_authenticated:
        return None
    unit_id = resolve(spec.unit_id, kwargs)
    if not ext.is_tracked_role(user, unit_id):  # R7
        return None
    if spec.when is not None and not spec.when(kwargs):
        return None
    return Target(
        ext.marker_id_of(user),
        unit_id,
        resolve(spec.project_id, kwargs),
        resolve(spec.task_id, kwargs),
        resolve(spec.task_definition_id, kwargs),
    )


def track_request(ext: Services, spec: TrackSpec, kwargs: Mapping[str, Any]) -> None:
    # a restart that dropped the host session's connection costs a second read, not the
    # activity (R9)
    target = ext.host_read(lambda: target_of(ext, spec, kwargs))
    if target is None:
        return
    marker_id = target.marker_id
    claim = _claim(ext, spec, marker_id)
    if claim is False:
        return  # a retry of a request already recorded (or being recorded)
    try:
        ext.record_activity(
            spec.action,
            marker_id=marker_id,
            unit_id=target.unit_id,
            ip_address=request.remote_addr,
            project_id=target.project_id,
            task_id=target.task_id,
            task_definition_id=target.task_definition_id,
        )
    except BaseException:
        if claim is not None:
            _settle(ext.state.idempotency.release, claim)
        raise
    if claim is not None:
        # the activity is stored: a key left unanswered is logged, never counted as lost
        _settle(ext.state.idempotency.complete, claim, idempotency.Answer(200, ""))


def _settle(step: Callable[..., None], claim: idempotency.Claim, *args: Any) -> None:
    """Answer or release a key; should the database refuse even that (past its retries on
    a new connection), the key is held until abandoned (``ABANDONED_AFTER``): logged."""
    try:
        step(claim, *args)
    except sa.exc.SQLAlchemyError:
        logger.exception(
            "could not settle an idempotency key; it is held for %d s",
            idempotency.ABANDONED_AFTER.total_seconds(),
        )


def _claim(
    ext: Services, spec: TrackSpec, marker_id: int
) -> idempotency.Claim | Literal[False] | None:
    """The request's claim on its idempotency key; None when it has none, False when the key
    was seen with this request's target. Never waits: the host's response must not wait for
    another request.

    A key covers one request target (the action, method and path). The same key sent with
    another target is no retry: the host did that work too. It is a client's mistake,
    logged and counted, and the request is recorded under a claim of its own target (so
    that its own retries with the key still count once), never dropped."""
    if spec.idempotency_header is None:
        return None
    key = request.headers.get(spec.idempotency_header)
    if key is None or not idempotency.valid_key(key):
        return None
    keys = ext.state.idempotency
    target = [spec.action, request.method, request.path]
    print_ = idempotency.fingerprint(target)
    claim = idempotency.Claim(idempotency.TRACK, marker_id, key)
    try:
        first = keys.claim(claim, print_, wait=0)
    except idempotency.KeyInUse:
        return False
    except idempotency.KeyReused:
        metrics.key_reused()
        logger.warning(
            "user %s sent one %s with %s %s and before with another request; recorded as a"
            " request of its own",
            marker_id,
            spec.idempotency_header,
            request.method,
            request.path,
        )
        claim = idempotency.Claim(idempotency.TRACK, marker_id, idempotency.own_key(key, target))
        try:
            first = keys.claim(claim, print_, wait=0)
        except (idempotency.KeyReused, idempotency.KeyInUse):
            return False
    return claim if first is None else False
