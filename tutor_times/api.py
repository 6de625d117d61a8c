"""The plumbing under the endpoints: one decorator validates a request against its schemas,
records the operation for ``/openapi.json``, and renders JSON or CSV; errors are JSON."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import HTTPException

from . import schemas

REF = "#/components/schemas/{model}"


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


def parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(exc) from None


@dataclass
class Operation:
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


@dataclass
class Api:
    """The blueprint's operations, as they were declared."""

    blueprint: Blueprint
    title: str
    version: str
    #: called before any input is read: raises for an anonymous request (401 before 400)
    authenticate: Callable[[], Any]
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
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an endpoint: the view gets ``path``, ``query`` and ``body`` as validated
        models and returns a dict (JSON) or a ready response."""

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            doc = (view.__doc__ or "").strip().split("\n\n")
            self.operations.append(
                Operation(
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
                )
            )

            @functools.wraps(view)
            def endpoint(**view_args: Any) -> Any:
                self.authenticate()
                kwargs: dict[str, Any] = {}
                if path is not None:
                    kwargs["path"] = parse(path, view_args)
                if query is not None:
                    kwargs["query"] = parse(query, request.args.to_dict())
                if body is not None:
                    data = request.get_json(silent=True)
                    if not isinstance(data, dict):
                        raise ApiError(400, "the request body must be a JSON object", "body")
                    kwargs["body"] = parse(body, data)
                try:
                    result = view(**kwargs)
                except schemas.FieldError as exc:
                    raise ApiError(400, f"{exc.field}: {exc.message}", exc.field) from None
                if isinstance(result, Response):
                    return result
                return jsonify(result), status

            flask_rule = rule.replace("{", "<").replace("}", ">")
            self.blueprint.add_url_rule(flask_rule, view.__name__, endpoint, methods=[method])
            return endpoint

        return decorate

    def openapi(self, prefix: str) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every declared operation."""
        models: set[type[BaseModel]] = {schemas.ErrorOut}
        for op in self.operations:
            models.update(m for m in (op.body, op.response) if m is not None)
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
    "400": "Invalid input; `field` names the parameter.",
    "401": "Not logged in.",
    "403": "Not allowed to see this (or to report for this unit).",
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
        "operationId": op.summary.split(":")[0].lower().replace(" ", "_").strip(".")[:60],
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
    error = {"application/json": {"schema": _ref(schemas.ErrorOut)}}
    for code, description in ERRORS.items():
        responses[code] = {"description": description, "content": error}
    if op.path is not None and "session_id" in op.path.model_fields:
        responses["404"] = {"description": "No such session.", "content": error}
    if op.body is not None:
        responses["503"] = {"description": "The database could not store it.", "content": error}
    spec["responses"] = responses
    return spec


def csv_response(name: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> Response:
    """A spreadsheet-ready CSV download (UTF-8 with BOM, so Excel reads it as UTF-8)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
