"""Providers (admin): upstream endpoints, their base-URL policy, and their API keys.

API keys never touch the database: the row only says whether a key exists and its last four
characters. The keys are in the app's :class:`SecretStore` (``Runtime.secret_store``): the OS keyring,
or an encrypted file in the data directory (MODELTRAIN_SECRET_STORE; never plain text).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.models import Provider
from server.errors import Conflict, InvalidInput, NotFound, Unavailable
from server.providers import netpolicy
from server.providers.base import ProviderError
from server.schemas.provider import ProviderCreate, ProviderTestError, ProviderTestResult, ProviderUpdate
from server.security.secret_store import SecretStore
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditTarget
from server.settings import Settings

if TYPE_CHECKING:
    from server.providers.registry import ProviderRegistry

log = logging.getLogger(__name__)

DEFAULT_PROVIDER_NAME = "Ollama (local)"
#: Keys shorter than this get no visible hint (four characters would reveal too much of them).
MIN_KEY_LENGTH_FOR_HINT = 16

Resolver = Callable[[str, int], list[netpolicy.IPAddress]]


# --- API keys (kept in the app's SecretStore: the OS keyring or the encrypted file) -----------------


def secret_name(provider_id: uuid.UUID) -> str:
    """The name of a provider's key in the secret store (the keyring's user name for it)."""
    return f"provider:{provider_id}"


def store_api_key(secrets: SecretStore, provider_id: uuid.UUID, api_key: str) -> None:
    secrets.set(secret_name(provider_id), api_key)


def read_api_key(secrets: SecretStore, provider: Provider) -> str | None:
    """The provider's key from the secret store (None when it has none)."""
    if not provider.has_api_key:
        return None
    key = secrets.get(secret_name(provider.id))
    if key is None:
        raise Unavailable(
            f"the provider's API key is missing from {secrets.label}; enter it again",
            code="api_key_missing",
        )
    return key


def delete_api_key(secrets: SecretStore, provider_id: uuid.UUID) -> None:
    try:
        secrets.delete(secret_name(provider_id))
    except Unavailable as exc:
        log.warning("could not delete a provider key from the secret store: %s", exc.code)


@dataclass
class KeyMove:
    """What ``modeltrain secrets migrate`` did: names moved, and providers whose key was not found."""

    moved: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def move_api_keys(session: Session, source: SecretStore, target: SecretStore) -> KeyMove:
    """Copy every provider key from ``source`` to ``target``, then delete it from ``source`` (only once
    all are copied, so an interrupted move loses nothing)."""
    result = KeyMove()
    rows = session.scalars(select(Provider).where(Provider.has_api_key.is_(True)).order_by(Provider.name))
    for provider in rows:
        name = secret_name(provider.id)
        value = source.get(name)
        if value is None:
            result.missing.append(provider.name)
            continue
        target.set(name, value)
        result.moved.append(name)
    for name in result.moved:
        source.delete(name)
    log.info("moved %d provider key(s) between secret stores", len(result.moved))
    return result


def key_hint(api_key: str) -> str:
    return api_key[-4:] if len(api_key) >= MIN_KEY_LENGTH_FOR_HINT else ""


# --- base URL policy (docs/security.md, D3) --------------------------------------------------------------


def _invalid_url(message: str) -> InvalidInput:
    return InvalidInput(f"invalid base URL: {message}", code="invalid_base_url", detail={"field": "base_url"})


def validate_base_url(kind: str, url: str, *, resolve: Resolver | None = None) -> str:
    """Check ``url`` and return it normalised (no trailing slash). Blocking (DNS): call off the loop.

    http/https only; no credentials, query or fragment; the host is resolved and refused when any
    address is link-local/metadata, unspecified, multicast or reserved; numeric IPv4 disguises and
    IPv4-mapped IPv6 literals are refused; plain http only to loopback or private addresses. The same
    rules hold for both kinds (docs/security.md, D3: "https, or http for loopback Ollama"); ``kind`` is kept
    so a kind-specific rule has its place.
    """
    raw = url.strip()
    if not raw or any(ord(c) < 33 or ord(c) == 0x7F for c in raw) or "\\" in raw:
        raise _invalid_url("it must not contain spaces, backslashes or control characters")
    if "#" in raw or "?" in raw:
        raise _invalid_url("it must not contain a query (?) or fragment (#)")
    try:
        parsed = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError):
        raise _invalid_url("it cannot be parsed") from None
    if parsed.scheme not in ("http", "https"):
        raise _invalid_url("use http:// or https://")
    if parsed.userinfo or "@" in raw:
        raise _invalid_url("credentials in the URL are not allowed; use the API key field")
    host = parsed.host
    if not host:
        raise _invalid_url("it has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = netpolicy.literal_address(host)
    if literal is None and netpolicy.looks_like_obfuscated_ipv4(host):
        raise _invalid_url("write IP addresses in the usual dotted form (e.g. 127.0.0.1)")
    if literal is not None and netpolicy.embedded_ipv4(literal) is not None:
        raise _invalid_url("IPv6 forms that embed an IPv4 address are not accepted; use the IPv4 address")
    try:
        addresses = (resolve or netpolicy.resolve)(host, port)
    except (OSError, UnicodeError):
        raise _invalid_url(f"the host {host} cannot be resolved") from None
    if not addresses:
        raise _invalid_url(f"the host {host} cannot be resolved")
    try:
        netpolicy.check_addresses(addresses)
    except netpolicy.BlockedAddress as exc:
        raise _invalid_url(str(exc)) from None
    if parsed.scheme == "http" and not all(netpolicy.is_local(a) for a in addresses):
        raise _invalid_url("plain http is only allowed to loopback or private addresses; use https")
    return str(parsed).rstrip("/")


# --- CRUD ------------------------------------------------------------------------------------------


def get_provider(session: Session, provider_id: uuid.UUID) -> Provider:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFound("provider not found", code="provider_not_found")
    return provider


def list_providers(session: Session, page: int = 1, size: int = 50) -> tuple[list[Provider], int]:
    total = session.scalar(select(func.count()).select_from(Provider)) or 0
    rows = session.scalars(
        select(Provider)
        .order_by(Provider.is_default.desc(), Provider.name)
        .offset((page - 1) * size)
        .limit(size)
    ).all()
    return list(rows), total


def _check_name_free(session: Session, name: str, exclude: uuid.UUID | None = None) -> None:
    query = select(Provider.id).where(func.lower(Provider.name) == name.lower())
    if exclude is not None:
        query = query.where(Provider.id != exclude)
    if session.scalar(query) is not None:
        raise Conflict("a provider with this name already exists", code="provider_name_taken")


def _make_default(session: Session, provider: Provider) -> None:
    for other in session.scalars(
        select(Provider).where(Provider.is_default.is_(True), Provider.id != provider.id)
    ):
        other.is_default = False
    provider.is_default = True


def _check_allowlist(kind: str, allowlist: list[str]) -> None:
    """Only OpenAI-compatible providers have a model allow-list (Ollama lists what is installed)."""
    if allowlist and kind != "openai":
        raise InvalidInput(
            "a model allow-list is only available for OpenAI-compatible providers",
            code="allowlist_not_supported",
            detail={"field": "model_allowlist"},
        )


def _check_group(kind: str, group: str | None) -> None:
    """Only Ollama providers join host groups (other upstreams are routed by explicit routes)."""
    if group is not None and kind != "ollama":
        raise InvalidInput(
            "host groups are only available for Ollama providers",
            code="group_not_supported",
            detail={"field": "group"},
        )


def _audit_state(provider: Provider) -> dict[str, object]:
    """What the audit log keeps of a provider: never the key, only whether there is one."""
    return {
        "kind": provider.kind,
        "base_url": provider.base_url,
        "enabled": provider.enabled,
        "is_default": provider.is_default,
        "model_allowlist": list(provider.model_allowlist or []),
        "key_set": provider.has_api_key,
        "group": provider.host_group,
        "priority": provider.route_priority,
        "weight": provider.route_weight,
    }


def create_provider(
    session: Session,
    data: ProviderCreate,
    secrets: SecretStore,
    *,
    ctx: AuditContext,
    resolve: Resolver | None = None,
) -> Provider:
    base_url = validate_base_url(data.kind, data.base_url, resolve=resolve)
    _check_name_free(session, data.name)
    if data.api_key is not None:
        secrets.check()  # fail before anything is written
    _check_allowlist(data.kind, data.model_allowlist)
    _check_group(data.kind, data.group)
    provider = Provider(
        name=data.name,
        kind=data.kind,
        base_url=base_url,
        enabled=data.enabled,
        model_allowlist=list(data.model_allowlist),
        host_group=data.group,
        route_priority=data.priority,
        route_weight=data.weight,
    )
    session.add(provider)
    session.flush()
    if data.api_key is not None:
        key = data.api_key.get_secret_value()
        store_api_key(secrets, provider.id, key)
        provider.has_api_key = True
        provider.api_key_hint = key_hint(key)
    if data.is_default or session.scalar(select(func.count()).select_from(Provider)) == 1:
        _make_default(session, provider)
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.PROVIDER_CREATED,
        target=AuditTarget("provider", provider.id, provider.name),
        details=_audit_state(provider),
    )
    log.info("provider %s (%s) created", provider.id, provider.kind)
    return provider


def update_provider(
    session: Session,
    provider_id: uuid.UUID,
    data: ProviderUpdate,
    secrets: SecretStore,
    *,
    ctx: AuditContext,
    resolve: Resolver | None = None,
) -> Provider:
    provider = get_provider(session, provider_id)
    before = _audit_state(provider) | {"name": provider.name}
    fields = data.model_fields_set
    if "name" in fields and data.name is not None and data.name != provider.name:
        _check_name_free(session, data.name, exclude=provider.id)
        provider.name = data.name
    new_key = data.api_key.get_secret_value() if "api_key" in fields and data.api_key is not None else None
    if new_key is not None:
        secrets.check()
    if "base_url" in fields and data.base_url is not None:
        base_url = validate_base_url(provider.kind, data.base_url, resolve=resolve)
        if base_url != provider.base_url:
            provider.base_url = base_url
            if provider.has_api_key and new_key is None:
                # A key must never follow the endpoint it was not given for (docs/security.md, D3).
                delete_api_key(secrets, provider.id)
                provider.has_api_key = False
                provider.api_key_hint = ""
    if new_key is not None:
        store_api_key(secrets, provider.id, new_key)
        provider.has_api_key = True
        provider.api_key_hint = key_hint(new_key)
    elif "api_key" in fields and data.api_key is None and provider.has_api_key:
        delete_api_key(secrets, provider.id)
        provider.has_api_key = False
        provider.api_key_hint = ""
    if "enabled" in fields and data.enabled is not None:
        provider.enabled = data.enabled
    if "model_allowlist" in fields and data.model_allowlist is not None:
        _check_allowlist(provider.kind, data.model_allowlist)
        provider.model_allowlist = list(data.model_allowlist)
    if "group" in fields:
        _check_group(provider.kind, data.group)
        provider.host_group = data.group
    if "priority" in fields and data.priority is not None:
        provider.route_priority = data.priority
    if "weight" in fields and data.weight is not None:
        provider.route_weight = data.weight
    if "is_default" in fields and data.is_default is not None:
        if data.is_default:
            _make_default(session, provider)
        elif provider.is_default:
            raise Conflict("make another provider the default instead", code="default_provider_required")
    session.flush()
    after = _audit_state(provider) | {"name": provider.name}
    changes = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
    if "api_key" in fields and new_key is not None:
        changes["key_replaced"] = {"from": before["key_set"], "to": True}
    if changes:
        audit.record(
            session,
            ctx,
            AuditAction.PROVIDER_CHANGED,
            target=AuditTarget("provider", provider.id, provider.name),
            details={"changes": changes},
        )
    return provider


def delete_provider(
    session: Session, provider_id: uuid.UUID, secrets: SecretStore, *, ctx: AuditContext
) -> None:
    provider = get_provider(session, provider_id)
    successor = None
    if provider.is_default:
        successor = session.scalar(
            select(Provider)
            .where(Provider.id != provider.id)
            .order_by(Provider.enabled.desc(), Provider.created_at)
        )
        if successor is None:
            raise Conflict(
                "the default provider cannot be deleted while it is the only one", code="last_provider"
            )
    had_key = provider.has_api_key
    audit.record(
        session,
        ctx,
        AuditAction.PROVIDER_DELETED,
        target=AuditTarget("provider", provider.id, provider.name),
        details=_audit_state(provider),
    )
    session.delete(provider)
    session.flush()
    if successor is not None:
        successor.is_default = True
        session.flush()
    if had_key:
        delete_api_key(secrets, provider_id)
    log.info("provider %s deleted", provider_id)


def _follow_configured_url(session: Session, url: str) -> None:
    default = session.scalar(select(Provider).where(Provider.kind == "ollama", Provider.is_default.is_(True)))
    if default is not None and default.base_url != url:
        log.info("default Ollama provider moved from %s to the configured %s", default.base_url, url)
        default.base_url = url
        session.flush()


def ensure_default_provider(session: Session, settings: Settings) -> Provider | None:
    """A fresh install gets one default Ollama provider at ``settings.default_ollama_url``
    (MODELTRAIN_OLLAMA_URL, else OLLAMA_HOST, else http://127.0.0.1:11434). Returns it when created.

    Later starts keep the default Ollama provider on an explicitly configured URL, so chat goes to the
    same Ollama that the daemon supervisor manages."""
    if session.scalar(select(func.count()).select_from(Provider)):
        if settings.ollama_url or (settings.ollama_host or "").strip():
            _follow_configured_url(session, settings.default_ollama_url.rstrip("/"))
        return None
    provider = Provider(
        name=DEFAULT_PROVIDER_NAME,
        kind="ollama",
        base_url=settings.default_ollama_url.rstrip("/"),
        is_default=True,
        enabled=True,
    )
    session.add(provider)
    session.flush()
    log.info("created the default provider %r", DEFAULT_PROVIDER_NAME)
    return provider


# --- connection test -------------------------------------------------------------------------------


def load_for_test(
    session: Session, provider_id: uuid.UUID, secrets: SecretStore
) -> tuple[Provider, str | None, ProviderTestError | None]:
    """The provider, its key and a URL-policy error (if its host now resolves somewhere forbidden)."""
    provider = get_provider(session, provider_id)
    try:
        validate_base_url(provider.kind, provider.base_url)
    except InvalidInput as exc:
        return provider, None, ProviderTestError(code=exc.code, message=exc.message)
    try:
        key = read_api_key(secrets, provider)
    except Unavailable as exc:
        return provider, None, ProviderTestError(code=exc.code, message=exc.message)
    return provider, key, None


async def check_connection(
    registry: ProviderRegistry, provider: Provider, api_key: str | None
) -> ProviderTestResult:
    """Ask the upstream for its model list: the list on success, a precise reason otherwise."""
    adapter = registry.build(provider, api_key)
    try:
        models = await adapter.list_models(timeout=max(registry.discovery_timeout, 10.0))
    except ProviderError as exc:
        return ProviderTestResult(
            ok=False, models=[], error=ProviderTestError(code=exc.code, message=exc.message)
        )
    return ProviderTestResult(ok=True, models=[m.name for m in models], error=None)
