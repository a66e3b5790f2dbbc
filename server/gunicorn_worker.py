"""The gunicorn worker class of ``packaging/gunicorn/gunicorn.conf.py``: uvicorn's worker with the same
HTTP protocol and the same shutdown as ``modeltrain serve`` (:mod:`server.http_protocol`,
:class:`server.listener.ReadyServer`: live replies are asked to stop first, so a worker's open streams
save their partial answers and end at once instead of holding the worker for gunicorn's graceful timeout).
Imported by gunicorn only."""

from __future__ import annotations

import functools
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from server.app import stop_replies
from server.http_protocol import CoalescingHttpToolsProtocol
from server.listener import ReadyServer


class Worker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": CoalescingHttpToolsProtocol,
    }

    async def _serve(self) -> None:
        # uvicorn_worker's own _serve, with our server class in place of uvicorn.Server.
        self.config.app = self.wsgi
        server = ReadyServer(self.config, before_shutdown=functools.partial(stop_replies, self.wsgi))
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
