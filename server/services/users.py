"""Users: creation, listing, role/status changes, password resets, deletion, first-start admin."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.db.models import RefreshToken, User
from server.errors import Conflict, InvalidInput, NotFound
from server.schemas.user import UserCreate, UserUpdate, normalize_email
from server.security.passwords import check_password_policy, hash_password
from server.security.secret_store import ensure_private_dir, write_private_file
from server.services import audit
from server.services import files as files_service
from server.services.audit import AuditAction, AuditContext, AuditTarget
from server.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ADMIN_EMAIL = "admin@example.com"
INITIAL_PASSWORD_FILE = "initial_admin_password.txt"


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    return user


def find_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def list_users(session: Session, page: int, size: int) -> tuple[list[User], int]:
    total = session.scalar(select(func.count()).select_from(User)) or 0
    rows = session.scalars(
        select(User).order_by(User.created_at, User.email).offset((page - 1) * size).limit(size)
    ).all()
    return list(rows), total


def _target(user: User) -> AuditTarget:
    return AuditTarget("user", user.id, user.email)


def create_user(session: Session, settings: Settings, data: UserCreate, *, ctx: AuditContext) -> User:
    check_password_policy(data.password, min_length=settings.password_min_length, email=data.email)
    password_hash = hash_password(data.password)  # before the first query: no lock held while hashing
    if find_by_email(session, data.email) is not None:
        raise Conflict("a user with this e-mail already exists", code="email_taken")
    user = User(
        email=data.email,
        display_name=data.display_name,
        password_hash=password_hash,
        role=data.role,
        must_change_password=False,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.USER_CREATED,
        target=_target(user),
        details={"role": user.role, "display_name": user.display_name},
    )
    log.info("user %s created with role %s", user.id, user.role)
    return user


def _active_admins(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(User).where(User.role == "admin", User.is_active.is_(True))
        )
        or 0
    )


def _guard_last_admin(session: Session, user: User) -> None:
    if user.role == "admin" and user.is_active and _active_admins(session) <= 1:
        raise Conflict("this is the last active administrator", code="last_admin")


def revoke_all_sessions(session: Session, user: User) -> None:
    """Kill every access and refresh token of ``user`` at once."""
    user.token_version += 1
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(timezone.utc))
    )


def update_user(session: Session, user_id: uuid.UUID, data: UserUpdate, *, ctx: AuditContext) -> User:
    """Change role, status or name; each kind of change is its own audit entry."""
    user = get_user(session, user_id)
    if data.role is not None and data.role != user.role:
        if data.role != "admin":
            _guard_last_admin(session, user)
        audit.record(
            session,
            ctx,
            AuditAction.ROLE_CHANGED,
            target=_target(user),
            details={"from": user.role, "to": data.role},
        )
        user.role = data.role
    if data.is_active is not None and data.is_active != user.is_active:
        if not data.is_active:
            _guard_last_admin(session, user)
            revoke_all_sessions(session, user)
        action = AuditAction.USER_ENABLED if data.is_active else AuditAction.USER_DISABLED
        audit.record(session, ctx, action, target=_target(user))
        user.is_active = data.is_active
    if data.display_name is not None and data.display_name != user.display_name:
        audit.record(
            session,
            ctx,
            AuditAction.USER_CHANGED,
            target=_target(user),
            details={"display_name": {"from": user.display_name, "to": data.display_name}},
        )
        user.display_name = data.display_name
    session.flush()
    return user


def set_display_name(session: Session, user: User, display_name: str) -> User:
    user.display_name = display_name
    session.flush()
    return user


def reset_password(
    session: Session,
    settings: Settings,
    user_id: uuid.UUID,
    new_password: str,
    *,
    ctx: AuditContext,
    must_change: bool = True,
) -> User:
    check_password_policy(new_password, min_length=settings.password_min_length)
    password_hash = hash_password(new_password)  # before the first query: no lock held while hashing
    user = get_user(session, user_id)
    check_password_policy(new_password, min_length=settings.password_min_length, email=user.email)
    user.password_hash = password_hash
    user.must_change_password = must_change
    user.password_expires_at = None
    revoke_all_sessions(session, user)
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.PASSWORD_RESET,
        target=_target(user),
        details={"must_change": must_change, "sessions_revoked": True},
    )
    log.info("password of user %s reset by an administrator", user.id)
    return user


def delete_user(session: Session, settings: Settings, user_id: uuid.UUID, *, ctx: AuditContext) -> None:
    """Delete an account with everything it owns; its uploaded files leave the disk once that commits."""
    user = get_user(session, user_id)
    _guard_last_admin(session, user)
    audit.record(session, ctx, AuditAction.USER_DELETED, target=_target(user), details={"role": user.role})
    files_service.remove_with_owner(settings, session, user.id)
    session.delete(user)
    session.flush()
    log.info("user %s deleted", user_id)


@dataclass(frozen=True)
class InitialAdmin:
    email: str
    password: str | None  # None when it came from INITIAL_ADMIN_PASSWORD (never echoed)
    password_file: Path | None
    expires_at: datetime | None


def ensure_initial_admin(session: Session, settings: Settings) -> InitialAdmin | None:
    """On a database with no users, create the default admin. Returns what to tell the operator once."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    configured = settings.initial_admin_password
    if configured is not None:
        password = configured.get_secret_value()
        check_password_policy(password, min_length=settings.password_min_length)
        expires_at = None
    else:
        password = secrets.token_urlsafe(12)
        expires_at = datetime.now(timezone.utc) + timedelta(hours=settings.initial_password_ttl_hours)
    admin = User(
        email=DEFAULT_ADMIN_EMAIL,
        display_name="Administrator",
        password_hash=hash_password(password),
        role="admin",
        must_change_password=True,
        password_expires_at=expires_at,
    )
    session.add(admin)
    session.flush()
    if configured is not None:
        log.info("created the initial administrator %s from INITIAL_ADMIN_PASSWORD", DEFAULT_ADMIN_EMAIL)
        return InitialAdmin(DEFAULT_ADMIN_EMAIL, None, None, None)
    ensure_private_dir(settings.data_dir)
    path = settings.data_dir / INITIAL_PASSWORD_FILE
    write_private_file(
        path,
        f"ModelTrain initial administrator\n"
        f"e-mail:   {DEFAULT_ADMIN_EMAIL}\n"
        f"password: {password}\n"
        f"valid until {expires_at:%Y-%m-%d %H:%M} UTC; you must change it at first sign-in.\n",
    )
    log.info("created the initial administrator %s; its password is in %s", DEFAULT_ADMIN_EMAIL, path)
    return InitialAdmin(DEFAULT_ADMIN_EMAIL, password, path, expires_at)


def forget_initial_password_file(settings: Settings) -> None:
    """The initial secret is single-use: drop its file once the admin has chosen a password."""
    path = settings.data_dir / INITIAL_PASSWORD_FILE
    path.unlink(missing_ok=True)


def create_admin(session: Session, settings: Settings, email: str, password: str) -> User:
    """Operator command: create an admin account, or promote and re-password an existing one."""
    email = normalize_email(email)
    check_password_policy(password, min_length=settings.password_min_length, email=email)
    user = find_by_email(session, email)
    created = user is None
    if user is None:
        user = User(email=email, display_name="", password_hash=hash_password(password), role="admin")
        session.add(user)
    else:
        user.role = "admin"
        user.is_active = True
        user.password_hash = hash_password(password)
        user.must_change_password = False
        user.password_expires_at = None
        revoke_all_sessions(session, user)
    session.flush()
    action = AuditAction.USER_CREATED if created else AuditAction.PASSWORD_RESET
    audit.record(session, audit.SYSTEM, action, target=_target(user), details={"via": "cli", "role": "admin"})
    return user


def operator_reset_password(session: Session, settings: Settings, email: str) -> tuple[User, str]:
    """Operator command: give ``email`` a new random password that must be changed at next sign-in."""
    user = find_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with e-mail {email.strip().lower()}", code="user_not_found")
    password = secrets.token_urlsafe(12)
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.is_active = True
    user.password_expires_at = datetime.now(timezone.utc) + timedelta(
        hours=settings.initial_password_ttl_hours
    )
    revoke_all_sessions(session, user)
    session.flush()
    audit.record(
        session, audit.SYSTEM, AuditAction.PASSWORD_RESET, target=_target(user), details={"via": "cli"}
    )
    return user, password


def validate_page(page: int, size: int) -> None:
    if page < 1 or not 1 <= size <= 200:
        raise InvalidInput("page must be >= 1 and size between 1 and 200", code="invalid_page")
