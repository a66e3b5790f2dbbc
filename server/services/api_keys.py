"""API keys: per-user keys for ``/v1`` (create, list, revoke), the admin switch for key creation by the
``user`` role, and the authentication seam the ``/v1`` router relies on (:func:`authenticate_key`).

Only a keyed hash of a key is stored (server/security/api_key_hash.py). Authenticating is one indexed
query joining the key and its user, so revocation, expiry, a disabled or demoted user take effect on the
very next request on every instance; ``last_used_at`` is written at most once a minute per key.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from server.db import catalog_generation
from server.db.models import ApiKey, AppSetting, User
from server.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from server.security.api_key_hash import (
    MAX_KEY_CHARS,
    KeyHasher,
    generate_key,
    is_api_key,
    shown_prefix,
)
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditTarget

#: ``last_used_at`` is written when it is older than this (never on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: Live (not revoked) keys one user may hold.
MAX_KEYS_PER_USER = 100
MAX_PATTERNS = 100
#: app_settings key of the switch "users with the user role may create keys".
USER_CREATION_SETTING = "api_keys.user_creation"


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- the /v1 authentication seam ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPrincipal:
    key_id: uuid.UUID
    user_id: uuid.UUID
    #: The user's role now (read with the key on every request).
    role: str
    #: Allow-list patterns (ids or ``*``-globs); None: every model.
    models: tuple[str, ...] | None
    #: The catalog generation, read in the same transaction as the key (server/db/catalog_generation.py):
    #: lets ``/v1`` reuse its model-id resolutions while no provider or preset changed.
    catalog_generation: str | None = None


def invalid_api_key() -> Unauthorized:
    return Unauthorized("invalid API key", code="invalid_api_key")


#: Built once: the key and its owner, by the unique hash index.
_LOOKUP = (
    select(
        ApiKey.id,
        ApiKey.user_id,
        ApiKey.expires_at,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        ApiKey.models,
        ApiKey.ips,
        User.role,
        User.is_active,
        catalog_generation.column().label("catalog_generation"),
    )
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.hash == bindparam("digest"))
)


def _ip_allowed(patterns: list[Any], client_ip: str | None) -> bool:
    if not client_ip:
        return False
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for pattern in patterns:
        try:
            if ip in ipaddress.ip_network(str(pattern), strict=False):
                return True
        except (ValueError, TypeError):
            continue
    return False


def check_key(
    session: Session, hasher: KeyHasher, raw: str, client_ip: str | None
) -> tuple[KeyPrincipal, bool]:
    """Resolve a raw key (read only): its principal, and whether ``last_used_at`` is due a write."""
    if not is_api_key(raw) or len(raw) > MAX_KEY_CHARS:
        raise invalid_api_key()
    digest = hasher.hash(raw)
    row = session.execute(_LOOKUP, {"digest": digest}).one_or_none()
    if row is None:
        raise invalid_api_key()
    now = _now()
    if row.revoked_at is not None:
        raise Unauthorized("this API key has been revoked", code="key_revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("this API key has expired", code="key_expired")
    if not row.is_active:
        raise Forbidden("the owner of this API key is disabled", code="user_disabled")
    if row.ips is not None and not _ip_allowed(row.ips, client_ip):
        raise Forbidden("this API key may not be used from this address", code="ip_not_allowed")
    principal = KeyPrincipal(
        key_id=row.id,
        user_id=row.user_id,
        role=row.role,
        models=None if row.models is None else tuple(str(m) for m in row.models),
        catalog_generation=None if row.catalog_generation is None else str(row.catalog_generation),
    )
    due = row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION
    return principal, due


def touch(session: Session, key_id: uuid.UUID) -> None:
    """Record a use: at most one write a minute per key, whichever instance gets there first."""
    now = _now()
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )


def authenticate_key(session: Session, hasher: KeyHasher, raw: str, client_ip: str | None) -> KeyPrincipal:
    """The principal of a raw ``mt-`` key, or ``Unauthorized``/``Forbidden`` with codes invalid_api_key,
    key_expired, key_revoked, ip_not_allowed, user_disabled. Writes ``last_used_at`` when due (the
    caller's transaction commits it)."""
    principal, due = check_key(session, hasher, raw, client_ip)
    if due:
        touch(session, principal.key_id)
    return principal


def model_allowed(principal: KeyPrincipal, model_id: str) -> bool:
    """Whether the key may use ``model_id`` (exact ids or ``fnmatch``-style globs, case-sensitive)."""
    if principal.models is None:
        return True
    return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in principal.models)


# --- the admin switch ----------------------------------------------------------------------------------


def user_creation_enabled(session: Session) -> bool:
    value = session.scalar(select(AppSetting.value).where(AppSetting.key == USER_CREATION_SETTING))
    return True if value is None else bool(value)


def set_user_creation_enabled(session: Session, enabled: bool, *, ctx: AuditContext = audit.SYSTEM) -> bool:
    row = session.get(AppSetting, USER_CREATION_SETTING)
    before = True if row is None else bool(row.value)
    if row is None:
        session.add(AppSetting(key=USER_CREATION_SETTING, value=enabled))
    else:
        row.value = enabled
    session.flush()
    if before != enabled:
        audit.record(
            session,
            ctx,
            AuditAction.SETTINGS_CHANGED,
            target=AuditTarget("setting", USER_CREATION_SETTING),
            details={"from": before, "to": enabled},
        )
    return enabled


# --- management -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    #: The raw key: returned once, never stored.
    raw: str


def _normalize_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    cleaned = [m.strip() for m in models if m.strip()]
    if len(cleaned) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} model patterns", code="too_many_patterns")
    return list(dict.fromkeys(cleaned))


def _normalize_ips(ips: list[str] | None) -> list[str] | None:
    if ips is None:
        return None
    cleaned: list[str] = []
    for value in ips:
        value = value.strip()
        if not value:
            continue
        try:
            cleaned.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise InvalidInput(
                f"not an IP address or CIDR network: {value[:64]}", code="invalid_ip"
            ) from None
    if len(cleaned) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} addresses", code="too_many_patterns")
    return list(dict.fromkeys(cleaned))


def create_key(
    session: Session,
    hasher: KeyHasher,
    user: User,
    *,
    name: str,
    expires_at: datetime | None = None,
    models: list[str] | None = None,
    ips: list[str] | None = None,
    ctx: AuditContext | None = None,
) -> CreatedKey:
    """Create a key for ``user``. ``ctx``: who acts, for the audit log (default: ``user`` itself)."""
    name = name.strip()
    if not name:
        raise InvalidInput("a key needs a name", code="invalid_name")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
        if expires_at <= _now():
            raise InvalidInput("the expiry must be in the future", code="expiry_in_past")
    norm_models = _normalize_models(models)
    norm_ips = _normalize_ips(ips)
    if user.role != "admin" and not user_creation_enabled(session):
        raise Forbidden("an administrator has switched key creation off", code="key_creation_disabled")
    live = session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    )
    if (live or 0) >= MAX_KEYS_PER_USER:
        raise Conflict(f"at most {MAX_KEYS_PER_USER} keys per user; revoke one first", code="too_many_keys")
    raw = generate_key()
    key = ApiKey(
        user_id=user.id,
        name=name,
        prefix=shown_prefix(raw),
        hash=hasher.hash(raw),
        expires_at=expires_at,
        models=norm_models,
        ips=norm_ips,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        ctx or AuditContext.of(user),
        AuditAction.API_KEY_CREATED,
        target=AuditTarget("api_key", key.id, key.name),
        details={
            "owner": user.email,
            "prefix": key.prefix,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "models": norm_models,
            "ips": norm_ips,
        },
    )
    return CreatedKey(key=key, raw=raw)


def list_keys(session: Session, user: User, *, user_id: uuid.UUID | None = None) -> list[tuple[ApiKey, str]]:
    """Live keys with their owner's e-mail: the caller's own, or (admin) everyone's or ``user_id``'s."""
    query = (
        select(ApiKey, User.email)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    if user.role != "admin":
        if user_id is not None and user_id != user.id:
            raise Forbidden("administrator rights are required", code="admin_required")
        query = query.where(ApiKey.user_id == user.id)
    elif user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return [(row[0], row[1]) for row in session.execute(query)]


def revoke_key(session: Session, user: User, key_id: uuid.UUID, *, ctx: AuditContext | None = None) -> None:
    key = session.get(ApiKey, key_id)
    if key is None or (key.user_id != user.id and user.role != "admin"):
        raise NotFound("API key not found", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = _now()
        session.flush()
        audit.record(
            session,
            ctx or AuditContext.of(user),
            AuditAction.API_KEY_REVOKED,
            target=AuditTarget("api_key", key.id, key.name),
            details={"owner_id": str(key.user_id), "prefix": key.prefix},
        )


__all__ = [
    "CreatedKey",
    "KeyPrincipal",
    "authenticate_key",
    "check_key",
    "create_key",
    "list_keys",
    "model_allowed",
    "revoke_key",
    "set_user_creation_enabled",
    "touch",
    "user_creation_enabled",
]
