"""``POST /activities``: what a client reports itself (R11), once per Idempotency-Key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Response, jsonify, request
from flask_login import current_user

from .. import reports
from ..app.services import services
from ..core.errors import InvalidActivityError, UnknownReferenceError
from ..store import idempotency
from . import schemas as s
from .api import ApiError
from .views import IDEMPOTENCY_HEADER, api, current_user_id

logger = logging.getLogger("tutor_times")


@api.route(
    "POST",
    "/activities",
    body=s.ActivityIn,
    response=s.ActivityCreated,
    status=201,
    tag="tutors",
)
def report_activity(body: s.ActivityIn) -> Any:
    """Report an activity of the current user, e.g. a heartbeat while reading a submission.

    The marker is always the current user and the IP the request's; only the unit's
    tutors, convenors and admins are tracked (R7). What a client reports is limited (R11):
    only the actions of TUTOR_TIMES_CLIENT_ACTIONS (never `assessing`), only ids the host
    confirms as the unit's, `at` within the backdating window; it is stored as `client`.

    With an `Idempotency-Key` header, a retry returns the first answer (status and body, with
    `Idempotent-Replayed: true`) and stores nothing; the same key with another body is a 422,
    and a retry while the first request is still being served waits for it (a 409 after 5 s).
    Keys are per user and kept for TUTOR_TIMES_IDEMPOTENCY_TTL; a request that failed leaves
    its key free. A connection the database drops meanwhile (a restart) is replaced and the
    key's claim, answer or release made on the new one. Should the database fail past that,
    a stored activity is still a 201 and a request that stored nothing keeps its own error
    (logged and counted), but the key stays claimed without an answer: a retry is a 409 for
    2 minutes, after which the claim counts as abandoned and a retry is served afresh (and
    stores the activity, a second time if the first request had stored it).
    """
    me = current_user_id()
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return _report_activity(me, body)
    if not idempotency.valid_key(key):
        raise ApiError(
            400,
            f"{IDEMPOTENCY_HEADER}: 1 to {idempotency.MAX_KEY_LENGTH} printable ASCII characters",
            IDEMPOTENCY_HEADER,
        )
    keys = services().state.idempotency
    claim = idempotency.Claim(idempotency.ACTIVITIES, me, key)
    try:
        with _storing():
            first = keys.claim(claim, idempotency.fingerprint(body.model_dump(mode="json")))
    except idempotency.KeyReused:
        raise ApiError(
            422, "this Idempotency-Key was used with another request", IDEMPOTENCY_HEADER
        ) from None
    except idempotency.KeyInUse:
        raise ApiError(
            409, "a request with this Idempotency-Key is still in progress", IDEMPOTENCY_HEADER
        ) from None
    if first is not None:
        replay = Response(first.body, status=first.status, mimetype="application/json")
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    try:
        response = jsonify(_report_activity(me, body).model_dump(mode="json"))
    except BaseException:
        _release(keys, claim)
        raise
    response.status_code = 201
    try:
        keys.complete(claim, idempotency.Answer(201, response.get_data(as_text=True)))
    except sa.exc.SQLAlchemyError:
        # The activity is stored: answer as such. A 500 would ask for a retry, and a retry
        # once the key is abandoned would store the activity a second time.
        services().count_failure("report")
        logger.exception("could not keep the answer for an Idempotency-Key; answered anyway")
    return response


def _release(keys: idempotency.IdempotencyKeys, claim: idempotency.Claim) -> None:
    """Free the key of a request that stored nothing. Should the database refuse even that,
    the request's own error is still the answer (never a 500 in its place), and the key
    stays held until it is abandoned (:data:`~tutor_times.store.idempotency.ABANDONED_AFTER`):
    logged and counted."""
    try:
        keys.release(claim)
    except sa.exc.SQLAlchemyError:
        services().count_failure("report")
        logger.exception(
            "could not release an Idempotency-Key; it is held for %d s",
            idempotency.ABANDONED_AFTER.total_seconds(),
        )


@contextmanager
def _storing() -> Iterator[None]:
    """A database failure while a reported activity (or its Idempotency-Key) is stored is a
    503 that says to try again: counted, logged, and nothing half-written kept."""
    try:
        yield
    except sa.exc.SQLAlchemyError:
        services().count_failure("report")
        logger.exception("could not store a reported activity")
        raise ApiError(503, "the activity could not be stored; try again") from None


def _report_activity(me: int, body: s.ActivityIn) -> s.ActivityCreated:
    """Record the reported activity; the reply as its response model, so an answer kept for
    an Idempotency-Key is serialized exactly as any other."""
    ext = services()
    with _storing():
        # the host's role_loader may read its database: a failure there is a 503 too
        tracked = ext.host_read(lambda: ext.is_tracked_role(current_user, body.unit_id))
    if not tracked:
        raise ApiError(403, "only the unit's tutors, convenors and admins are tracked", "unit_id")
    try:
        with _storing():
            activity = ext.record_client_activity(
                body.action,
                marker_id=me,
                unit_id=body.unit_id,
                ip_address=request.remote_addr,
                project_id=body.project_id,
                task_id=body.task_id,
                task_definition_id=body.task_definition_id,
                at=body.at,
            )
    except UnknownReferenceError as exc:
        raise ApiError(404, exc.message, exc.field) from None
    except InvalidActivityError as exc:
        raise ApiError(400, exc.message, exc.field) from None
    row = {**reports.activity_row(activity), "marker_id": me, "unit_id": body.unit_id}
    return s.ActivityCreated.model_validate(row)
