"""LAN access: admin-gated switch for the second listener that the desktop host provides.

The server only *calls* a controller registered by the host in ``runtime.lan`` (the desktop host's
LAN listener); a headless ``modeltrain serve`` has none and answers 409
``lan_unavailable``. Turning LAN access on needs the administrator's password again and no account
still on an initial/temporary password (docs/security.md, A5).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.models import User
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.runtime import Runtime
from server.schemas.lan import LanRead, LanUpdate
from server.security.passwords import verify_password
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditOutcome, AuditTarget

log = logging.getLogger(__name__)
security_log = logging.getLogger("modeltrain.security")


class LanControl(Protocol):
    """What the host registers. Methods block until the socket is open/closed and return ``status()``."""

    def status(self) -> dict[str, Any]: ...

    def enable(self, host: str | None, port: int | None) -> dict[str, Any]: ...

    def disable(self) -> dict[str, Any]: ...

    def ca_certificate(self) -> bytes | None: ...


def _controller(runtime: Runtime) -> LanControl:
    controller = runtime.lan
    if controller is None:
        raise Conflict(
            "LAN access is only available in the desktop app; for a headless server set "
            "MODELTRAIN_HOST and MODELTRAIN_ALLOWED_HOSTS instead",
            code="lan_unavailable",
        )
    return controller


def get_status(runtime: Runtime) -> LanRead:
    return LanRead(**_controller(runtime).status())


def ca_certificate(runtime: Runtime) -> bytes:
    """The local CA's certificate (DER), public on purpose: devices install it to trust the LAN listener,
    after comparing its fingerprint with the one the LAN dialog shows."""
    der = _controller(runtime).ca_certificate()
    if der is None:
        raise NotFound("there is no LAN certificate authority yet; turn on LAN access first", code="no_ca")
    return der


def _accounts_on_initial_password(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.is_active.is_(True), User.must_change_password.is_(True))
        )
        or 0
    )


_LAN = AuditTarget("lan", "lan", "LAN access")


def update(session: Session, runtime: Runtime, admin: User, data: LanUpdate, *, ctx: AuditContext) -> LanRead:
    controller = _controller(runtime)
    if not data.enabled:
        result = controller.disable()
        audit.record(session, ctx, AuditAction.LAN_DISABLED, target=_LAN)
        security_log.info("LAN access turned off by user %s", admin.id)
        return LanRead(**result)
    if not data.password:
        raise InvalidInput("enter your password to turn on LAN access", code="password_required")
    if not verify_password(data.password, admin.password_hash)[0]:
        security_log.warning("LAN access refused for user %s: wrong password", admin.id)
        audit.record(
            session,
            ctx,
            AuditAction.LAN_ENABLED,
            target=_LAN,
            outcome=AuditOutcome.DENIED,
            details={"reason": "invalid_password"},
        )
        session.commit()  # the refusal's entry stays although the request fails
        # 403, not 401: the session is fine, only this confirmation failed.
        raise Forbidden("the password is wrong", code="invalid_password")
    pending = _accounts_on_initial_password(session)
    if pending:
        raise Conflict(
            f"{pending} account(s) still use an initial or temporary password; set a real password "
            "before turning on LAN access",
            code="initial_password_in_use",
            detail={"accounts": pending},
        )
    result = controller.enable(data.host, data.port)
    audit.record(
        session,
        ctx,
        AuditAction.LAN_ENABLED,
        target=_LAN,
        details={"host": result.get("host"), "port": result.get("port")},
    )
    security_log.warning(
        "LAN access turned on by user %s on %s:%s", admin.id, result.get("host"), result.get("port")
    )
    return LanRead(**result)
