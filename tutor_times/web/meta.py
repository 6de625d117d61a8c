"""The endpoints about the service itself: health, Prometheus metrics and the OpenAPI
document."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Response, current_app, jsonify, request
from flask_login import current_user

from ..app import health
from ..app.services import services
from ..core import metrics
from . import schemas as s
from .api import ApiError, error_response
from .views import api, current_user_id


@api.route(
    "GET",
    "/health",
    response=s.HealthOut,
    tag="meta",
    public=True,
    responses={
        503: ("A check failed; `checks` says which.", s.HealthOut),
        401: ("Not logged in, with TUTOR_TIMES_HEALTH_PUBLIC off.", None),
    },
)
def health_check() -> Any:
    """Whether this process can track: the database, Redis, and the worker's last heartbeat.

    200 with `status: ok` when every check passes, 503 with `status: fail` otherwise, for a
    load balancer; each check's status, time and kind of failure, for a person. Redis is
    "not used" with TUTOR_TIMES_STORE = "sql". The worker's heartbeat age fails the check
    only past TUTOR_TIMES_HEALTH_MAX_HEARTBEAT_AGE. Public unless TUTOR_TIMES_HEALTH_PUBLIC
    is off. Every wait is bounded (TUTOR_TIMES_SQL_TIMEOUT, Redis's socket timeout).
    """
    ext = services()
    state = ext.state
    if not state.settings.operations.health_public:
        current_user_id()
    checks = health.check(state, ext.tracking_engine, ext.models.Jobs, ext.clock())
    # built by its response model, as every other reply is (instants as ISO with a Z); a
    # check's fields it did not give stay out of the body rather than showing as null
    body = s.HealthOut.model_validate(checks).model_dump(mode="json", exclude_unset=True)
    response = jsonify(body)
    response.status_code = 200 if body["status"] == health.OK else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@api.route(
    "GET",
    "/metrics",
    tag="meta",
    public=True,
    responses={
        401: ("No bearer token, or the wrong one.", None),
        403: ("Signed in, but not staff (the host's staff_loader).", None),
        404: ("Metrics are off (TUTOR_TIMES_METRICS).", None),
    },
)
def prometheus_metrics() -> Any:
    """Prometheus metrics, in its text format; a 404 unless TUTOR_TIMES_METRICS is on.

    A scraper sends `Authorization: Bearer <TUTOR_TIMES_METRICS_TOKEN>`; a signed-in user the
    host's `staff_loader` accepts needs no token; with TUTOR_TIMES_METRICS_PUBLIC on, the
    host protects the endpoint itself. Under several
    processes the values are added up across them (PROMETHEUS_MULTIPROC_DIR).
    """
    ext = services()
    settings = ext.state.settings.operations
    if not settings.metrics:
        raise ApiError(404, "metrics are off (TUTOR_TIMES_METRICS)")
    if not settings.metrics_public and not _bearer_matches(settings.metrics_token):
        if not current_user or not current_user.is_authenticated:
            refused: Response = error_response(ApiError(401, "a bearer token is required"))[0]
            refused.status_code = 401
            refused.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return refused
        if not ext.is_staff(current_user):
            raise ApiError(
                403, "only the site's staff (the host's staff_loader) or the bearer token"
            )
    text, content_type = metrics.exposition()
    return Response(text, mimetype=None, content_type=content_type)


def _bearer_matches(token: str | None) -> bool:
    if token is None:
        return False
    sent = request.headers.get("Authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


@api.route("GET", "/openapi.json", response=s.OpenApiOut, tag="meta", public=True)
def openapi() -> Any:
    """The OpenAPI 3.1 document of these endpoints, from the schemas that validate them."""
    prefix = current_app.config["TUTOR_TIMES_URL_PREFIX"].rstrip("/")
    return api.openapi(prefix)
