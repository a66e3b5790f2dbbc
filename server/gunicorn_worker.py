"""The gunicorn worker class of ``packaging/gunicorn/gunicorn.conf.py``: uvicorn's worker with the same
HTTP protocol as ``modeltrain serve`` (:mod:`server.http_protocol`). Imported by gunicorn only."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

from server.http_protocol import CoalescingHttpToolsProtocol


class Worker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": CoalescingHttpToolsProtocol,
    }
