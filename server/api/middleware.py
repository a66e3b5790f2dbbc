"""Access log + request metrics: a pure ASGI middleware (streaming responses pass through untouched).

For every HTTP request it assigns a request id (a well-formed incoming ``X-Request-ID`` is kept,
anything else is replaced), returns it in the ``X-Request-ID`` response header, writes one line to the
``modeltrain.access`` logger (request id, method, path without the query string, status, duration in
ms) and feeds the metrics collector (``runtime.metrics``) with the status and the time to
the response start, so a long SSE stream does not count as a slow API call.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.runtime import Runtime
from server.security.network_guard import client_address

ACCESS_LOGGER = "modeltrain.access"
access_log = logging.getLogger(ACCESS_LOGGER)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text = value.decode("latin-1").strip()
            return text if _REQUEST_ID.match(text) else None
    return None


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        first_byte: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = int(message["status"])
                first_byte = time.perf_counter()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            status = 500 if first_byte is None else status
            raise
        finally:
            ended = time.perf_counter()
            duration_ms = (ended - started) * 1000.0
            latency_ms = ((first_byte or ended) - started) * 1000.0
            metrics = self.runtime.metrics
            if metrics is not None:
                metrics.record_request(status, latency_ms)
            if access_log.isEnabledFor(logging.INFO):
                # The record is built here rather than by access_log.info(), which would walk the stack
                # for the caller's file and line (unused by our format) on every request.
                access_log.handle(
                    access_log.makeRecord(
                        ACCESS_LOGGER,
                        logging.INFO,
                        __file__,
                        0,
                        "rid=%s method=%s path=%s status=%d duration_ms=%.1f client=%s",
                        (
                            request_id,
                            scope.get("method", "-"),
                            scope.get("path", "-"),
                            status,
                            duration_ms,
                            # the real client behind MODELTRAIN_TRUSTED_PROXIES (nginx), else the peer
                            client_address(scope, self.runtime.settings.trusted_proxies) or "-",
                        ),
                        None,
                    )
                )
