"""The app's Ollama services: the daemon supervisor (``runtime.ollama_daemon``), the pull manager
(``runtime.ollama_pulls``) and the runtime installer (``runtime.ollama_installer``), started and stopped by
the app lifespan."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.orm import Session

from server.errors import Conflict, DomainError, Unavailable
from server.schemas.ollama import OllamaStatusRead
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditOutcome, AuditTarget
from server.services.ollama_admin import OllamaTarget
from server.services.ollama_daemon import OllamaDaemon
from server.services.ollama_install import RuntimeInstaller
from server.services.ollama_pulls import PullJob, PullManager
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


# --- what an administrator does, with its audit entry (services/audit.py) ---------------------------

_DAEMON = AuditTarget("ollama", "local", "Ollama")


def start_daemon(runtime: Runtime, session: Session, ctx: AuditContext, *, wait: bool) -> OllamaStatusRead:
    daemon = get_daemon(runtime)
    daemon.start()
    if wait:
        wait_settled(daemon, runtime.settings)
    status = daemon.status()
    audit.record(session, ctx, AuditAction.OLLAMA_STARTED, target=_DAEMON, details={"state": status.state})
    return status


def stop_daemon(runtime: Runtime, session: Session, ctx: AuditContext) -> OllamaStatusRead:
    daemon = get_daemon(runtime)
    if daemon.state == "external":
        raise Conflict(
            "the Ollama at this URL was not started by ModelTrain; stop it where it runs",
            code="ollama_external",
        )
    status = daemon.stop()
    audit.record(session, ctx, AuditAction.OLLAMA_STOPPED, target=_DAEMON, details={"state": status.state})
    return status


def restart_daemon(runtime: Runtime, session: Session, ctx: AuditContext, *, wait: bool) -> OllamaStatusRead:
    daemon = get_daemon(runtime)
    daemon.restart()
    if wait:
        wait_settled(daemon, runtime.settings)
    status = daemon.status()
    audit.record(
        session,
        ctx,
        AuditAction.OLLAMA_STARTED,
        target=_DAEMON,
        details={"state": status.state, "restart": True},
    )
    return status


def record_model(
    session: Session,
    ctx: AuditContext,
    action: AuditAction,
    target: OllamaTarget,
    name: str,
    details: dict[str, Any] | None = None,
) -> None:
    """The audit entry of a model created, copied or deleted on ``target`` (in the request's transaction)."""
    audit.record(
        session,
        ctx,
        action,
        target=AuditTarget("model", name, name),
        details={"ollama": target.url, "provider_id": target.provider_id, **(details or {})},
    )


def pull_recorder(runtime: Runtime, ctx: AuditContext) -> Callable[[PullJob], None]:
    """The ``on_finish`` hook of a pull: its entry once it has ended, with the actor who started it."""

    def finished(job: PullJob) -> None:
        outcome = AuditOutcome.SUCCESS if job.state == "success" else AuditOutcome.FAILURE
        details: dict[str, Any] = {"ollama": job.url, "state": job.state, "digest": job.digest}
        if job.error:
            details["error"] = job.error.get("code")
        audit.record_separately(
            runtime.session_factory,
            ctx,
            AuditAction.MODEL_PULLED,
            target=AuditTarget("model", job.name, job.name),
            outcome=outcome,
            details=details,
        )

    return finished
