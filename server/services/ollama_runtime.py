"""The app's Ollama services: the daemon supervisor (``runtime.ollama_daemon``), the pull manager
(``runtime.ollama_pulls``) and the runtime installer (``runtime.ollama_installer``), started and stopped by
the app lifespan."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from server.errors import DomainError, Unavailable
from server.services.ollama_daemon import OllamaDaemon
from server.services.ollama_install import RuntimeInstaller
from server.services.ollama_pulls import PullManager
from server.settings import Settings

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

#: States the daemon settles in after a start or restart (success or a clear failure).
SETTLED_STATES = ("running", "external", "failed", "stopped", "not_installed")


async def start_ollama(runtime: Runtime) -> None:
    """Register the daemon supervisor, the pull manager and the runtime installer; autostart Ollama when
    the setting says so (with the managed runtime when the user has no ``ollama`` of their own)."""
    settings = runtime.settings
    installer = RuntimeInstaller(settings)
    runtime.ollama_installer = installer
    daemon = OllamaDaemon(settings, managed_binary=installer.managed_binary)
    runtime.ollama_daemon = daemon
    runtime.ollama_pulls = PullManager(settings)
    if settings.ollama_autostart:
        try:
            await anyio.to_thread.run_sync(daemon.start)
        except DomainError as exc:
            log.warning("Ollama autostart: %s", exc.message)


async def stop_ollama(runtime: Runtime) -> None:
    """Cancel pulls and a runtime install, then stop a managed Ollama (an external one is never touched)."""
    if runtime.ollama_installer is not None:
        runtime.ollama_installer.cancel()  # a partial download stays and resumes; an unpack is cleaned later
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


def get_installer(runtime: Runtime) -> RuntimeInstaller:
    if runtime.ollama_installer is None:
        raise Unavailable("the runtime installer is not running (app not started)", code="ollama_unavailable")
    return runtime.ollama_installer
