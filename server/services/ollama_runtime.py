"""The app's Ollama services: the daemon supervisor (``runtime.ollama_daemon``) and the pull manager
(``runtime.ollama_pulls``), started and stopped by the app lifespan."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from server.errors import DomainError, Unavailable
from server.services.ollama_daemon import OllamaDaemon
from server.services.ollama_pulls import PullManager
from server.settings import Settings

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

#: States the daemon settles in after a start or restart (success or a clear failure).
SETTLED_STATES = ("running", "external", "failed", "stopped", "not_installed")


async def start_ollama(runtime: Runtime) -> None:
    """Register the daemon supervisor and the pull manager; autostart Ollama when the setting says so."""
    settings = runtime.settings
    daemon = OllamaDaemon(settings)
    runtime.ollama_daemon = daemon
    runtime.ollama_pulls = PullManager(settings)
    if settings.ollama_autostart:
        try:
            await anyio.to_thread.run_sync(daemon.start)
        except DomainError as exc:
            log.warning("Ollama autostart: %s", exc.message)


async def stop_ollama(runtime: Runtime) -> None:
    """Cancel pulls, then stop a managed Ollama (an external one is never touched)."""
    if runtime.ollama_pulls is not None:
        await runtime.ollama_pulls.aclose()
    if runtime.ollama_daemon is not None:
        await anyio.to_thread.run_sync(runtime.ollama_daemon.close)


def get_daemon(runtime: Runtime) -> OllamaDaemon:
    if runtime.ollama_daemon is None:
        raise Unavailable("the Ollama supervisor is not running (app not started)", code="ollama_unavailable")
    return runtime.ollama_daemon


def get_pulls(runtime: Runtime) -> PullManager:
    if runtime.ollama_pulls is None:
        raise Unavailable("the pull manager is not running (app not started)", code="ollama_unavailable")
    return runtime.ollama_pulls


def wait_settled(daemon: OllamaDaemon, settings: Settings) -> None:
    """Block until a start/restart has an outcome (or the start timeout passes)."""
    daemon.wait_for(SETTLED_STATES, settings.ollama_start_timeout + 5)
