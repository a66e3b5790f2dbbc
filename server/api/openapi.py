"""The OpenAPI document at ``/api/openapi.json``: FastAPI's, corrected to tell the truth.

FastAPI documents a success answer and a 422 ``HTTPValidationError`` the server never sends. This builder
starts from FastAPI's document and, for every operation:

- documents every error status it can answer with the one shared ``Error`` component
  (``{"code","message","detail"}``, what ``api/errors.py`` sends), and 422 with ``ValidationError``, the
  same shape whose ``detail`` lists the offending fields; ``/v1`` answers in OpenAI's shape
  (``OpenAIError``), where a validation failure is a 400;
- derives the statuses from the route itself: 401 (and 403) when a dependency authenticates the caller,
  404 for a path with ids, 400/413 for a request body (unparseable, over the guard's size limit), 422 for
  any parameter, 503/507 for an operation that uses the database; and adds the ones a route declares with
  :func:`raises` (``responses=raises(Conflict, TooManyRequests)``: the ``DomainError`` classes its
  service raises on purpose, each carrying its status);
- documents a ``text/event-stream`` answer, event by event, for routes marked with :func:`sse_events`.

Every answer may also be a 403 from the network guard (a Host outside the allow-list, a cross-origin
write) and a 405 with ``Allow`` for a method a path does not serve (``server/static.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

from server import deps
from server.api.v1_auth import v1_principal
from server.errors import DomainError

REF = "#/components/schemas/"
F = TypeVar("F", bound=Callable[..., Any])

#: One error answer of ``/api`` (server/api/errors.py).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["code", "message", "detail"],
    "properties": {
        "code": {"type": "string", "description": "Stable machine-readable code, e.g. `not_found`."},
        "message": {"type": "string", "description": "Human-readable explanation (English)."},
        "detail": {"description": "Extra data some codes carry (limits, fields...), else null."},
    },
}
FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "FieldError",
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}
#: A 422: a request the schema refuses (``detail`` lists the fields) or a service's own ``InvalidInput``.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ValidationError",
    "type": "object",
    "required": ["code", "message", "detail"],
    "properties": {
        "code": {"type": "string", "description": "`invalid_input`, or a service's own code."},
        "message": {"type": "string"},
        "detail": {
            "anyOf": [{"type": "array", "items": {"$ref": REF + "FieldError"}}, {}],
            "description": "The offending fields (a list of FieldError) for a refused request.",
        },
    },
}
#: One error answer of ``/v1`` (server/api/v1/errors.py).
OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}

DESCRIPTIONS = {
    400: "Bad request: a body that is not what the operation reads",
    401: "Not signed in, or the token is invalid or expired",
    403: "Forbidden: missing rights, an initial password to change, or a request the network guard refuses",
    404: "Not found (or not yours)",
    405: "Method not allowed (the `Allow` header lists the methods the path serves)",
    409: "Conflict with the current state",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests (see `Retry-After`)",
    502: "The upstream model server failed",
    503: "Unavailable: the database or an upstream is busy or down (see `Retry-After` when present)",
    504: "The upstream model server did not answer in time",
    507: "The disk is full",
}

_SSE_ATTR = "__modeltrain_sse__"
#: The dependencies that authenticate the caller (every signed-in dependency builds on one of these).
_SIGNED_IN = frozenset({deps.user_pending_password, deps.current_user, deps.admin_user, v1_principal})


def raises(*errors: type[DomainError] | int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the statuses of the ``DomainError`` classes (or bare statuses) it may
    answer with beyond those the builder derives. The builder gives each the shared error schema."""
    statuses = sorted({e if isinstance(e, int) else e.status for e in errors})
    return {s: {"description": DESCRIPTIONS.get(s, "Error")} for s in statuses}


def sse_events(**events: type[BaseModel] | Any) -> Callable[[F], F]:
    """Mark a streaming route: its 200 answer is ``text/event-stream`` with these events, each named by
    its ``event:`` field and carrying the JSON of the given model (or type) in its data lines."""

    def mark(fn: F) -> F:
        setattr(fn, _SSE_ATTR, events)
        return fn

    return mark


def _walk(dep: Dependant) -> Iterable[Dependant]:
    yield dep
    for sub in dep.dependencies:
        yield from _walk(sub)


def _calls(route: APIRoute) -> set[Any]:
    return {d.call for d in _walk(route.dependant) if d.call is not None}


def _has_params(route: APIRoute) -> bool:
    return any(
        d.path_params or d.query_params or d.header_params or d.cookie_params or d.body_params
        for d in _walk(route.dependant)
    )


def error_statuses(route: APIRoute, method: str) -> set[int]:
    """The statuses an operation can answer with, read from its dependencies and parameters."""
    calls = _calls(route)
    statuses: set[int] = {403}  # the network guard (Host allow-list, cross-origin writes)
    if calls & _SIGNED_IN:  # 401 without a valid credential; 403 for rights, an initial password...
        statuses.add(401)
    if route.dependant.path_params:
        statuses.add(404)
    if route.body_field is not None:
        statuses |= {400, 413}
    if _has_params(route):
        statuses.add(422)
    if deps.get_session in calls:  # the database busy or down; full on a write
        statuses.add(503)
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            statuses.add(507)
    statuses |= {int(s) for s in (route.responses or {}) if str(s).isdigit() and int(s) >= 400}
    return statuses


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF + ref}}}


def _sse_content(events: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    variants = []
    for name, model in events.items():
        schema = TypeAdapter(model).json_schema(ref_template=REF + "{model}", mode="serialization")
        for key, value in schema.pop("$defs", {}).items():
            components.setdefault(key, value)
        if schema.get("title") and "properties" in schema:
            components.setdefault(schema["title"], schema)
            schema = {"$ref": REF + schema["title"]}
        variants.append(
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": schema,
                    },
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            }
        )
    item = {"oneOf": variants} if len(variants) > 1 else variants[0]
    return {"text/event-stream": {"schema": item}}


def _api_routes(routes: Iterable[Any]) -> Iterable[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
            continue
        inner = getattr(route, "original_router", None) or getattr(route, "routes", None)
        if inner is not None:  # an included router (FastAPI keeps them as nodes of their own)
            yield from _api_routes(inner.routes if hasattr(inner, "routes") else inner)


def _routes(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    found: dict[tuple[str, str], APIRoute] = {}
    for route in _api_routes(app.routes):
        if route.include_in_schema:
            for method in route.methods or ():
                found.setdefault((method.upper(), route.path_format), route)
    return found


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The corrected document (cached on the app like FastAPI's own)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(
        Error=ERROR_SCHEMA,
        FieldError=FIELD_ERROR_SCHEMA,
        ValidationError=VALIDATION_ERROR_SCHEMA,
        OpenAIError=OPENAI_ERROR_SCHEMA,
    )
    routes = _routes(app)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((method.upper(), path))
            if route is None:
                continue
            responses = operation.setdefault("responses", {})
            statuses = error_statuses(route, method.upper())
            if "requestBody" in operation:  # a raw body too (openapi_extra): unreadable, or over the limit
                statuses |= {400, 413}
            v1 = path == "/v1" or path.startswith("/v1/")
            if v1 and 422 in statuses:  # OpenAI answers an invalid request with a 400
                statuses = (statuses - {422}) | {400}
                responses.pop("422", None)
            for status in sorted(statuses):
                entry = responses.setdefault(str(status), {"description": DESCRIPTIONS.get(status, "Error")})
                ref = "OpenAIError" if v1 else ("ValidationError" if status == 422 else "Error")
                entry["content"] = _json(ref)
                if status == 429:
                    entry["headers"] = {
                        "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
                    }
            events = getattr(route.endpoint, _SSE_ATTR, None)
            if events:
                ok = responses.setdefault("200", {"description": "Server-Sent Events"})
                ok.setdefault("content", {}).update(_sse_content(events, components))
            operation["responses"] = dict(sorted(responses.items()))
    app.openapi_schema = schema
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi`'s document at the app's ``openapi_url``."""
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
