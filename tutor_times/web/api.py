"""The plumbing under the endpoints: one decorator validates a request against its schemas,
records the operation for ``/openapi.json``, and renders JSON or CSV; errors are JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

REF = "#/components/schemas/{model}"


class FieldError(ValueError):
    """A valid-looking parameter that cannot be used, e.g. a date out of range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ErrorBody(BaseModel):
    status: int
    message: str
    field: str | None = Field(None, description="The offending parameter, when there is one.")


class ErrorOut(BaseModel):
    error: ErrorBody


class ApiError(HTTPException):
    """An error answered as ``{"error": {"status", "message", "field"?}}``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = status
        self.field = field


def error_response(exc: HTTPException) -> Any:
    error: dict[str, Any] = {"status": exc.code, "message": exc.description}
    if getattr(exc, "field", None):
        error["field"] = exc.field  # type: ignore[attr-defined]
    return jsonify(error=error), exc.code


def bad_request(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 400 naming the field."""
    first = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"].removeprefix("Value error, ")
    return ApiError(400, f"{name}: {message}", field=name.split(".")[0])


def query_args(model: type[BaseModel] | None) -> dict[str, str]:
    """The query string as a dict; a parameter the endpoint does not know, or one given
    twice, is a 400 naming it rather than something silently ignored."""
    known = {f.alias or name for name, f in model.model_fields.items()} if model else set()
    args: dict[str, str] = {}
    for name, values in request.args.lists():
        shown = name[:64]
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise ApiError(400, f"unknown parameter {shown!r} (allowed: {allowed})", shown)
        if len(values) > 1:
            raise ApiError(400, f"{shown}: given more than once", shown)
        args[name] = values[0]
    return args


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("a key appears twice")
    return data


def json_object(cap: int) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 (413 past ``cap`` bytes) naming the body.

    Parsed here rather than by ``request.get_json`` so that nesting too deep for the parser
    (RecursionError) and keys given twice are refused like any other bad JSON. A streamed
    body is read to one byte past the cap at most (``request.max_content_length``), which
    tells a body of exactly ``cap`` bytes from a longer one."""
    if not request.is_json:
        raise ApiError(400, "the request body must be a JSON object", "body")
    too_large = ApiError(413, f"the request body is larger than {cap} bytes", "body")
    try:
        text = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise too_large from None
    if len(text) > cap:
        raise too_large
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", "body")
    return data


def parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(exc) from None


@dataclass
class Operation:
    #: the view's name: the endpoint's name in Flask and its operationId in OpenAPI
    name: str
    method: str
    rule: str
    summary: str
    description: str
    path: type[BaseModel] | None
    query: type[BaseModel] | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    csv: bool
    tag: str
    public: bool
    #: answers of this endpoint alone: status -> (description, body model; None: an error)
    responses: dict[int, tuple[str, type[BaseModel] | None]] = field(default_factory=dict)


@dataclass
class Api:
    """The blueprint's operations, as they were declared."""

    blueprint: Blueprint
    title: str
    version: str
    #: called before any input is read: raises for an anonymous request (401 before 400)
    authenticate: Callable[[], Any]
    #: the largest JSON body, in bytes, for the request being served
    body_cap: Callable[[], int]
    operations: list[Operation] = field(default_factory=list)

    def route(
        self,
        method: str,
        rule: str,
        *,
        path: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        csv: bool = False,
        tag: str = "reports",
        public: bool = False,
        responses: dict[int, tuple[str, type[BaseModel] | None]] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an endpoint: the view gets ``path``, ``query`` and ``body`` as validated
        models and returns a dict (JSON) or a ready response. A ``public`` one answers
        anonymous users too."""

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            doc = (view.__doc__ or "").strip().split("\n\n")
            op = Operation(
                view.__name__,
                method,
                rule,
                doc[0].replace("\n", " "),
                "\n\n".join(doc[1:]),
                path,
                query,
                body,
                response,
                status,
                csv,
                tag,
                public,
                dict(responses or {}),
            )
            self.operations.append(op)
            endpoint = functools.wraps(view)(self._endpoint(op, view))
            flask_rule = rule.replace("{", "<").replace("}", ">")
            self.blueprint.add_url_rule(flask_rule, view.__name__, endpoint, methods=[method])
            return endpoint

        return decorate

    def _endpoint(self, op: Operation, view: Callable[..., Any]) -> Callable[..., Any]:
        """The Flask view of an operation: authenticate, validate, call, build the reply."""

        def endpoint(**view_args: Any) -> Any:
            if not op.public:
                self.authenticate()
            kwargs: dict[str, Any] = {}
            if op.path is not None:
                kwargs["path"] = parse(op.path, view_args)
            args = query_args(op.query)
            if op.query is not None:
                kwargs["query"] = parse(op.query, args)
            if op.body is not None:
                kwargs["body"] = parse(op.body, json_object(self.body_cap()))
            try:
                result = view(**kwargs)
            except FieldError as exc:
                raise ApiError(400, f"{exc.field}: {exc.message}", exc.field) from None
            if isinstance(result, Response):
                return result
            if op.response is not None:
                # the reply is built by the model that documents it: the two cannot drift
                result = op.response.model_validate(result).model_dump(mode="json")
            return jsonify(result), op.status

        return endpoint

    def openapi(self, prefix: str) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every declared operation."""
        models: set[type[BaseModel]] = {ErrorOut}
        for op in self.operations:
            models.update(m for m in (op.body, op.response) if m is not None)
            models.update(m for _, m in op.responses.values() if m is not None)
        bodies = {op.body for op in self.operations}
        _, top = models_json_schema(
            [(m, "validation" if m in bodies else "serialization") for m in models],
            ref_template=REF,
        )
        paths: dict[str, Any] = {}
        for op in self.operations:
            paths.setdefault(prefix + op.rule, {})[op.method.lower()] = _operation(op)
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "paths": paths,
            "components": {"schemas": top.get("$defs", {})},
        }


ERRORS = {
    "400": "Invalid input, or an unknown parameter; `field` names it.",
    "401": "Not logged in.",
    "403": "Not allowed to see this (or to report for this unit).",
    "413": "The request body is larger than the cap.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": prop,
        }
        if description:
            param["description"] = description
        params.append(param)
    return params


def _operation(op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.name,
        "tags": [op.tag],
        "parameters": (_parameters(op.path, "path") if op.path else [])
        + (_parameters(op.query, "query") if op.query else []),
    }
    if op.description:
        spec["description"] = op.description
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {"schema": _ref(op.response)}
    if op.csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {str(op.status): {"description": "OK", "content": content}}
    error = {"application/json": {"schema": _ref(ErrorOut)}}
    one_session = op.path is not None and "session_id" in op.path.model_fields
    for code, description in ERRORS.items():
        if code in ("401", "403") and op.public:
            continue
        if code == "403" and one_session:
            continue  # a session the user may not see is a 404, as if it did not exist
        responses[code] = {"description": description, "content": error}
    if one_session:
        responses["404"] = {
            "description": "No such session, or not one the user may see.",
            "content": error,
        }
    if op.body is not None:
        responses["404"] = {
            "description": "The unit (or user) does not exist.",
            "content": error,
        }
        responses["503"] = {"description": "The database could not store it.", "content": error}
        responses["409"] = {
            "description": "A request with this Idempotency-Key is still in progress.",
            "content": error,
        }
        responses["422"] = {
            "description": "This Idempotency-Key was used with another request.",
            "content": error,
        }
    for status, (description, model) in op.responses.items():
        body = {"application/json": {"schema": _ref(model or ErrorOut)}}
        responses[str(status)] = {"description": description, "content": body}
    spec["responses"] = responses
    return spec
