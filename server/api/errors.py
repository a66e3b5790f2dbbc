"""Exception handlers: every error is ``{"code","message","detail"}``; no traceback ever reaches a client."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.errors import DomainError

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, detail=None, headers=None) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "detail": detail}, status_code=status, headers=headers
    )


def _clean_validation(errors: list[dict]) -> list[dict]:
    # Never echo the submitted input back (it may hold a password).
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation(list(exc.errors()))
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
        return error_response(422, "invalid_input", f"{where}: {first['msg']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, None, getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses to take: a NUL character in text on PostgreSQL, a number out of
        # its range. The request's input, not a server fault.
        log.info("database refused a value: %s", str(exc.orig).splitlines()[0] if exc.orig else exc)
        return error_response(422, "invalid_input", "a value in the request cannot be stored or searched for")

    @app.exception_handler(OperationalError)
    async def _db(_: Request, exc: OperationalError) -> JSONResponse:
        text = str(exc.orig).lower() if exc.orig else ""
        if "disk is full" in text or "no space left on device" in text:  # SQLite; PostgreSQL
            return error_response(
                507, "disk_full", "the disk holding the database is full; free space and retry"
            )
        if "locked" in text or "busy" in text:
            log.warning("database busy: %s", text)
            return error_response(
                503, "database_busy", "the database is busy; retry shortly", headers={"Retry-After": "1"}
            )
        log.error("database error", exc_info=exc)
        return error_response(503, "database_unavailable", "the database is unavailable")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred; see the server log")
