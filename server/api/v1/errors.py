"""Errors on ``/v1`` in OpenAI's shape: ``{"error": {"message", "type", "code", "param"}}``.

The app's handlers (server/api/errors.py) stay the only place that turns an exception into a status and
a code; on ``/v1`` paths their ``{"code","message","detail"}`` answer is rewritten into OpenAI's shape
(and 422 becomes 400, as OpenAI answers invalid requests). ``/api`` keeps its own shape."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

V1_PREFIX = "/v1/"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def is_v1(path: str) -> bool:
    return path.startswith(V1_PREFIX) or path == "/v1"


def openai_error(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def _param(detail: Any) -> str | None:
    if isinstance(detail, dict) and isinstance(detail.get("param"), str):
        return detail["param"]
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(p) for p in detail[0].get("loc", []) if p != "body"]
        return ".".join(loc) or None
    return None


def to_openai(response: Response) -> Response:
    """An ``/api``-shaped JSON error response rewritten into OpenAI's shape (same headers)."""
    try:
        body = json.loads(bytes(response.body))
    except (ValueError, AttributeError):
        return response
    if not isinstance(body, dict) or "code" not in body:
        return response
    status = 400 if response.status_code == 422 else response.status_code
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
    }
    content = openai_error(
        status, str(body.get("code")), str(body.get("message", "")), _param(body.get("detail"))
    )
    return JSONResponse(content, status_code=status, headers=headers)


def install_v1_error_handlers(app: FastAPI) -> None:
    """Wrap every installed exception handler so that it answers in OpenAI's shape on ``/v1`` paths.
    Call after ``install_error_handlers`` and before the app serves its first request."""
    for key, handler in list(app.exception_handlers.items()):

        async def scoped(request: Request, exc: Exception, _handler=handler) -> Response:
            response = await _handler(request, exc)
            return to_openai(response) if is_v1(request.url.path) else response

        app.exception_handlers[key] = scoped
