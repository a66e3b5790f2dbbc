"""Domain errors raised by services. ``api`` turns them into ``{"code","message","detail"}`` JSON."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose. ``status`` is the HTTP status the API uses."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(DomainError):
    status = 422
    code = "invalid_input"


class Unauthorized(DomainError):
    status = 401
    code = "not_authenticated"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(DomainError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, detail: Any = None):
        super().__init__(message, code=code, detail=detail, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


class Unavailable(DomainError):
    status = 503
    code = "unavailable"


class UpstreamError(DomainError):
    status = 502
    code = "upstream_error"


class InsufficientStorage(DomainError):
    status = 507
    code = "disk_full"
