"""Sign-in, refresh-token rotation with reuse detection, logout, password change, login throttling."""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from server.db.models import LoginThrottle, RefreshToken, User
from server.errors import Conflict, Forbidden, TooManyRequests, Unauthorized
from server.security.passwords import burn_verify_time, check_password_policy, hash_password, verify_password
from server.security.tokens import TokenCodec, hash_refresh_token, invalid_token, new_refresh_token
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditOutcome, AuditTarget
from server.services.users import forget_initial_password_file, revoke_all_sessions
from server.settings import Settings

log = logging.getLogger(__name__)
security_log = logging.getLogger("modeltrain.security")

MAX_LOCK_SECONDS = 3600


@dataclass(frozen=True)
class AuthSession:
    """A signed-in session: the access token for the response body, the refresh token for the cookie."""

    user: User
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_at: datetime
    family_id: str = ""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _bad_credentials() -> Unauthorized:
    return Unauthorized("wrong e-mail or password", code="invalid_credentials")


def _bad_refresh() -> Unauthorized:
    return Unauthorized("the session has expired; sign in again", code="invalid_refresh_token")


# --- throttling --------------------------------------------------------------------------------


def _throttle_keys(email: str, client: str) -> list[str]:
    return [f"account:{email}", f"ip:{client or 'unknown'}"]


def _check_throttle(session: Session, keys: list[str]) -> None:
    now = _now()
    rows = session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys))).all()
    waits = [
        int((r.locked_until - now).total_seconds()) + 1
        for r in rows
        if r.locked_until and r.locked_until > now
    ]
    if waits:
        retry = max(waits)
        raise TooManyRequests(
            f"too many failed sign-ins; try again in {retry} s", retry_after=retry, code="login_throttled"
        )


def _register_failure(session: Session, settings: Settings, keys: list[str]) -> None:
    now = _now()
    for key in keys:
        if session.get_bind().dialect.name == "postgresql":
            # Parallel failures (several instances, many workers) may create the same row at once:
            # create it idempotently, then lock it, so every failure counts and none ends in a 500.
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            session.execute(
                pg_insert(LoginThrottle)
                .values(key=key, failures=0, strikes=0, updated_at=now)
                .on_conflict_do_nothing()
            )
            row = session.scalars(
                select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
            ).one()
        else:  # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE)
            found = session.get(LoginThrottle, key)
            if found is None:
                found = LoginThrottle(key=key, failures=0, strikes=0)
                session.add(found)
            row = found
        row.failures += 1
        if row.failures >= settings.login_max_failures:
            row.strikes += 1
            row.failures = 0
            seconds = min(MAX_LOCK_SECONDS, settings.login_lockout_seconds * 2 ** (row.strikes - 1))
            row.locked_until = now + timedelta(seconds=seconds)
            security_log.warning(
                "sign-in locked for %s s after repeated failures (%s)", seconds, key.split(":")[0]
            )


def _clear_throttle(session: Session, key: str) -> None:
    row = session.get(LoginThrottle, key)
    if row is not None:
        session.delete(row)


# --- sessions ----------------------------------------------------------------------------------


def _open_session(
    session: Session,
    settings: Settings,
    codec: TokenCodec,
    user: User,
    *,
    family: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    user_agent: str = "",
) -> AuthSession:
    family = family or uuid.uuid4()
    expires_at = expires_at or _now() + timedelta(days=settings.refresh_token_expire)
    raw = new_refresh_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family,
            token_hash=hash_refresh_token(raw),
            expires_at=expires_at,
            user_agent=user_agent[:255],
        )
    )
    access, ttl = codec.issue_access(user.id, user.token_version, str(family))
    return AuthSession(user, access, ttl, raw, expires_at, str(family))


def login(
    session: Session,
    settings: Settings,
    codec: TokenCodec,
    email: str,
    password: str,
    *,
    client: str,
    user_agent: str = "",
) -> AuthSession:
    """Check credentials and open a session. Failures are committed even though the call raises, each
    with its audit entry; a success's entry commits with the new session."""
    email = email.strip().lower()
    keys = _throttle_keys(email, client)
    tried = AuditContext(actor_email=email[:320], client=client)
    try:
        _check_throttle(session, keys)
    except TooManyRequests as exc:
        session.rollback()
        audit.record(
            session,
            tried,
            AuditAction.SIGN_IN_THROTTLED,
            outcome=AuditOutcome.DENIED,
            details={"retry_after": exc.retry_after},
        )
        session.commit()
        raise
    user = session.scalar(select(User).where(User.email == email))
    if user is not None:
        tried = AuditContext.of(user, client)
    # End the read before the deliberately slow hash: on SQLite the transaction holds the write lock,
    # and concurrent sign-ins would otherwise queue behind each other's Argon2 runs.
    session.commit()
    if user is None:
        burn_verify_time(password)
        ok, new_hash = False, None
    else:
        ok, new_hash = verify_password(password, user.password_hash)
    if not ok:
        _register_failure(session, settings, keys)
        audit.record(
            session,
            tried,
            AuditAction.SIGN_IN,
            outcome=AuditOutcome.FAILURE,
            details={"reason": "invalid_credentials", "known_account": user is not None},
        )
        session.commit()
        log.info("failed sign-in")
        raise _bad_credentials()
    assert user is not None
    if not user.is_active:
        session.rollback()
        _record_refused(session, tried, "account_disabled")
        raise Forbidden("this account is disabled; ask an administrator", code="account_disabled")
    if user.password_expires_at is not None and user.password_expires_at < _now():
        session.rollback()
        _record_refused(session, tried, "initial_password_expired")
        raise Forbidden(
            "the initial password has expired; an operator can issue a new one with "
            "`modeltrain reset-password EMAIL`",
            code="initial_password_expired",
        )
    for key in keys:
        _clear_throttle(session, key)
    if new_hash:
        user.password_hash = new_hash
    user.last_login_at = _now()
    opened = _open_session(session, settings, codec, user, user_agent=user_agent)
    audit.record(session, tried, AuditAction.SIGN_IN, details={"method": "password"})
    log.info("user %s signed in", user.id)
    return opened


def _record_refused(session: Session, ctx: AuditContext, reason: str) -> None:
    """A sign-in with the right password that is refused all the same: its entry, in a transaction of
    its own (the refusal changes nothing else)."""
    audit.record(session, ctx, AuditAction.SIGN_IN, outcome=AuditOutcome.DENIED, details={"reason": reason})
    session.commit()


def refresh(
    session: Session,
    settings: Settings,
    codec: TokenCodec,
    raw_token: str | None,
    *,
    client: str | None = None,
    user_agent: str | None = None,
) -> AuthSession:
    """Rotate a refresh token. Replaying a used one revokes its whole family (RFC 9700 §4.14.2), except
    within ``refresh_reuse_grace_seconds`` of its rotation, from the same browser and while the family
    lives: two tabs refreshing at once then both get an access token, and the family keeps one live
    refresh token (the rotation's), so it never splits and the user is not signed out."""
    if not raw_token:
        raise _bad_refresh()
    # FOR UPDATE: on PostgreSQL a concurrent refresh of the same token waits for this one and then sees it
    # used (SQLite's IMMEDIATE transactions already serialise the two).
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(raw_token)).with_for_update()
    )
    if row is None or row.revoked_at is not None:
        raise _bad_refresh()
    now = _now()
    if row.used_at is not None and _within_grace(session, settings, row, now, user_agent):
        user = session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise _bad_refresh()
        access, ttl = codec.issue_access(user.id, user.token_version, str(row.family_id))
        return AuthSession(user, access, ttl, "", row.expires_at, str(row.family_id))
    if row.used_at is not None:
        _revoke_family(session, row.family_id)
        owner = session.get(User, row.user_id)
        audit.record(
            session,
            AuditContext.of(owner, client) if owner else AuditContext(actor_id=row.user_id, client=client),
            AuditAction.REFRESH_REUSE,
            target=AuditTarget("session", row.family_id),
            outcome=AuditOutcome.DENIED,
            details={"family_revoked": True},
        )
        session.commit()
        security_log.warning(
            "refresh token reuse detected for user %s: session family %s revoked", row.user_id, row.family_id
        )
        raise _bad_refresh()
    if row.expires_at <= now:
        raise _bad_refresh()
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise _bad_refresh()
    row.used_at = now
    return _open_session(
        session,
        settings,
        codec,
        user,
        family=row.family_id,
        expires_at=row.expires_at,
        user_agent=row.user_agent,
    )


def _within_grace(
    session: Session, settings: Settings, row: RefreshToken, now: datetime, user_agent: str | None
) -> bool:
    """A used token presented again just after its rotation, by the same browser, while its family still
    has a live successor: the second of two concurrent refreshes, not a replay."""
    grace = settings.refresh_reuse_grace_seconds
    if grace <= 0 or row.used_at is None or now - row.used_at > timedelta(seconds=grace):
        return False
    if user_agent is not None and user_agent[:255] != row.user_agent:
        return False
    successor = session.scalar(
        select(RefreshToken.id).where(
            RefreshToken.family_id == row.family_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
    )
    return successor is not None


def _revoke_family(session: Session, family: uuid.UUID) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=_now())
    )


def logout(session: Session, raw_token: str | None, family_from_access: str | None = None) -> None:
    """End the session of a refresh token (or of the access token's session id)."""
    family: uuid.UUID | None = None
    if raw_token:
        row = session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(raw_token))
        )
        family = row.family_id if row else None
    if family is None and family_from_access:
        try:
            family = uuid.UUID(family_from_access)
        except ValueError:
            family = None
    if family is not None:
        _revoke_family(session, family)


@functools.cache
def _access_query():
    """The statement of :func:`authenticate_access`, built once (it runs on every API request): the user,
    only while the sign-in ``family`` is not logged out, revoked or expired."""
    alive = (
        select(RefreshToken.id)
        .where(
            RefreshToken.family_id == bindparam("family"),
            RefreshToken.user_id == bindparam("user_id"),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > bindparam("now"),
        )
        .exists()
    )
    return select(User).where(User.id == bindparam("user_id"), alive)


def change_password(
    session: Session,
    settings: Settings,
    codec: TokenCodec,
    user: User,
    current: str,
    new: str,
    *,
    ctx: AuditContext,
    user_agent: str = "",
) -> AuthSession:
    """Change the password, revoke every session of the user, and open a fresh one for this client."""
    ok, _ = verify_password(current, user.password_hash)
    if not ok:
        raise Unauthorized("the current password is wrong", code="invalid_credentials")
    check_password_policy(new, min_length=settings.password_min_length, email=user.email)
    if verify_password(new, user.password_hash)[0]:
        from server.errors import InvalidInput

        raise InvalidInput("choose a password different from the current one", code="password_unchanged")
    user.password_hash = hash_password(new)
    was_initial = user.must_change_password
    user.must_change_password = False
    user.password_expires_at = None
    revoke_all_sessions(session, user)
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.PASSWORD_CHANGED,
        target=AuditTarget("user", user.id, user.email),
        details={"initial": was_initial, "sessions_revoked": True},
    )
    if was_initial:
        forget_initial_password_file(settings)
    log.info("user %s changed their password; all sessions revoked", user.id)
    return _open_session(session, settings, codec, user, user_agent=user_agent)


def authenticate_access(session: Session, codec: TokenCodec, token: str) -> tuple[User, str]:
    """Resolve a bearer token to its user, checking status, token version and session liveness."""
    claims = codec.verify_access(token)
    try:
        family = uuid.UUID(claims.session_id)
    except ValueError:
        raise invalid_token() from None
    # One query: the user, only while the token's sign-in is still alive.
    user = session.scalar(_access_query(), {"user_id": claims.user_id, "family": family, "now": _now()})
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise invalid_token()
    return user, claims.session_id


# --- desktop sign-in (the token checks live in security/desktop_token.py) ---------------


def desktop_owner(session: Session) -> User:
    """The desktop owner: the first active administrator."""
    owner = session.scalar(
        select(User)
        .where(User.role == "admin", User.is_active.is_(True))
        .order_by(User.created_at, User.email)
        .limit(1)
    )
    if owner is None:
        raise Conflict("there is no active administrator to sign in", code="no_desktop_owner")
    return owner


def desktop_login(
    session: Session,
    settings: Settings,
    codec: TokenCodec,
    *,
    client: str | None = None,
    user_agent: str = "",
) -> tuple[AuthSession, str]:
    """Open a normal session for the desktop owner; returns it and its family id (to mark it as a
    desktop session). The caller has already checked the desktop token and the listener."""
    user = desktop_owner(session)
    family = uuid.uuid4()
    user.last_login_at = _now()
    opened = _open_session(session, settings, codec, user, family=family, user_agent=user_agent)
    audit.record(session, AuditContext.of(user, client), AuditAction.SIGN_IN, details={"method": "desktop"})
    log.info("desktop owner %s signed in by the desktop app", user.id)
    return opened, str(family)


def set_initial_password(
    session: Session,
    settings: Settings,
    codec: TokenCodec,
    user: User,
    new: str,
    *,
    ctx: AuditContext,
    user_agent: str = "",
) -> AuthSession:
    """Desktop sessions only: replace a still-initial password without the current one (the owner
    proved local presence with the desktop token). Revokes every session and opens a fresh one."""
    if not user.must_change_password:
        raise Conflict(
            "the password has already been set; change it with the current password",
            code="password_already_set",
        )
    check_password_policy(new, min_length=settings.password_min_length, email=user.email)
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_expires_at = None
    revoke_all_sessions(session, user)
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.PASSWORD_CHANGED,
        target=AuditTarget("user", user.id, user.email),
        details={"initial": True, "method": "desktop", "sessions_revoked": True},
    )
    forget_initial_password_file(settings)
    log.info("desktop owner %s set the password; all sessions revoked", user.id)
    return _open_session(session, settings, codec, user, user_agent=user_agent)
