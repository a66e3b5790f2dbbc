"""What users can chat with: model configurations plus the models Ollama and OpenAI-compatible providers
list live (``/api/tags``, ``/v1/models``), and :func:`resolve_model`, which turns an opaque model id into an
adapter and defaults for the chat."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.db.models import ModelConfig, ModelRoute, Provider
from server.errors import DomainError, NotFound
from server.providers.base import ChatProvider, ModelInfo, ProviderError
from server.providers.model_names import display_model_name, is_valid_model_name
from server.providers.registry import ProviderRegistry, get_registry
from server.schemas.model import (
    ModelCapability,
    ModelDefaults,
    ModelList,
    ModelListError,
    ModelProviderRef,
    ModelRead,
)
from server.schemas.provider import GROUP_PATTERN
from server.security.secret_store import SecretStore, get_secret_store
from server.services import model_routes, routing
from server.services.providers import read_api_key

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

CONFIG_PREFIX = "cfg:"
OLLAMA_PREFIX = "ollama:"
#: A model the Ollama providers of a host group serve together: ``group:<group>:<model>``.
GROUP_PREFIX = "group:"
#: An explicit route (services/model_routes.py): ``route:<route id>``.
ROUTE_PREFIX = "route:"
OPENAI_PREFIX = "openai:"
#: Model ids an OpenAI-compatible server lists are free-form; we take any up to this length.
MAX_REMOTE_NAME = 256
#: Model names made only of these characters appear as they are in ids; others are base64url-encoded
#: behind a "~" (a character the Ollama grammar never allows, so the two forms cannot collide).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


# --- ids -------------------------------------------------------------------------------------------


def config_model_id(config_id: uuid.UUID) -> str:
    return f"{CONFIG_PREFIX}{config_id}"


def _discovered_id(prefix: str, provider_id: uuid.UUID, name: str) -> str:
    if _PLAIN_NAME.match(name):
        return f"{prefix}{provider_id}:{name}"
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"{prefix}{provider_id}:~{encoded}"


def ollama_model_id(provider_id: uuid.UUID, name: str) -> str:
    return _discovered_id(OLLAMA_PREFIX, provider_id, name)


def openai_model_id(provider_id: uuid.UUID, name: str) -> str:
    """``openai:<provider id>:<model id>`` (base64url behind "~" when the id has "/" or the like)."""
    return _discovered_id(OPENAI_PREFIX, provider_id, name)


def group_model_id(group: str, name: str) -> str:
    """``group:<group>:<model name>`` (the name base64url-encoded behind "~" when it is not plain)."""
    if _PLAIN_NAME.match(name):
        return f"{GROUP_PREFIX}{group}:{name}"
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"{GROUP_PREFIX}{group}:~{encoded}"


def route_model_id(route_id: uuid.UUID) -> str:
    return f"{ROUTE_PREFIX}{route_id}"


def parse_route_id(model_id: str) -> uuid.UUID | None:
    """The route id of a ``route:`` id; None for any other kind of id; NotFound when malformed."""
    if not isinstance(model_id, str) or not model_id.startswith(ROUTE_PREFIX):
        return None
    try:
        return uuid.UUID(model_id[len(ROUTE_PREFIX) :])
    except ValueError:
        raise _not_found() from None


def parse_group_id(model_id: str) -> tuple[str, str] | None:
    """``(group, model name)`` of a ``group:`` id; None for any other kind of id; NotFound when malformed."""
    if not isinstance(model_id, str) or not model_id.startswith(GROUP_PREFIX) or len(model_id) > 1200:
        return None
    group, sep, name = model_id[len(GROUP_PREFIX) :].partition(":")
    try:
        if not sep or not GROUP_PATTERN.match(group):
            raise ValueError
        if name.startswith("~"):
            padded = name[1:] + "=" * (-len(name[1:]) % 4)
            name = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
        if not is_valid_model_name(name):
            raise ValueError
    except (ValueError, UnicodeError, binascii.Error):
        raise _not_found() from None
    return group, name


def is_valid_remote_name(name: str) -> bool:
    """A model id from an OpenAI-compatible ``/v1/models``: 1-256 characters, no control characters."""
    return (
        0 < len(name) <= MAX_REMOTE_NAME
        and name.strip() == name
        and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name)
    )


def _not_found() -> NotFound:
    return NotFound("this model does not exist or is not available", code="model_not_found")


def parse_model_id(model_id: str) -> tuple[str, uuid.UUID, str | None]:
    """``("cfg", config id, None)``, ``("ollama", provider id, model name)`` or ``("openai", provider id,
    model id)``; NotFound otherwise."""
    if not isinstance(model_id, str) or len(model_id) > 1200:
        raise _not_found()
    try:
        if model_id.startswith(CONFIG_PREFIX):
            return "cfg", uuid.UUID(model_id[len(CONFIG_PREFIX) :]), None
        for kind, prefix in (("ollama", OLLAMA_PREFIX), ("openai", OPENAI_PREFIX)):
            if not model_id.startswith(prefix):
                continue
            provider_part, sep, name = model_id[len(prefix) :].partition(":")
            if not sep:
                raise ValueError
            if name.startswith("~"):
                padded = name[1:] + "=" * (-len(name[1:]) % 4)
                name = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
            valid = is_valid_model_name(name) if kind == "ollama" else is_valid_remote_name(name)
            if not valid:
                raise ValueError
            return kind, uuid.UUID(provider_part), name
    except (ValueError, UnicodeError, binascii.Error):
        pass
    raise _not_found()


# --- resolve ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    """Everything the chat needs to call a model."""

    provider: Provider
    adapter: ChatProvider
    #: The name the upstream knows the model by.
    upstream_model: str
    #: ``{"system_prompt": str, "options": {temperature, top_p, context_length, max_tokens, ...}}``
    #: (options in our vocabulary, unset ones left out).
    defaults: dict[str, Any]
    model_id: str = ""
    #: Display name (configuration name, or the discovered model's name).
    name: str = ""


def config_options(config: ModelConfig) -> dict[str, Any]:
    options = {
        key: value
        for key, value in (
            ("temperature", config.temperature),
            ("top_p", config.top_p),
            ("context_length", config.context_length),
            ("max_tokens", config.max_tokens),
        )
        if value is not None
    }
    return {**(config.options or {}), **options}


def resolve_model(
    session: Session, runtime: Runtime, model_id: str, *, user_id: uuid.UUID | None
) -> ResolvedModel:
    """Turn an id from ``GET /api/models`` into an adapter and defaults. Blocking (DB, secret store): call
    it from a worker thread. Unknown or disabled model/provider, or a preset personal to someone other than
    ``user_id`` -> ``NotFound(code="model_not_found")``. A host group's model resolves to a routed adapter
    over the group's enabled providers (services/routing.py)."""
    grouped = parse_group_id(model_id)
    if grouped is not None:
        return _resolve_group(session, runtime, model_id, *grouped)
    route_id = parse_route_id(model_id)
    if route_id is not None:
        return _resolve_route(session, runtime, model_id, route_id)
    kind, object_id, name = parse_model_id(model_id)
    if kind == "cfg":
        config = session.get(ModelConfig, object_id)
        if config is None or not config.enabled or config.owner_id not in (None, user_id):
            raise _not_found()
        provider = session.get(Provider, config.provider_id)
        upstream = config.model
        defaults = {"system_prompt": config.system_prompt or "", "options": config_options(config)}
        display = config.name
    else:
        provider = session.get(Provider, object_id)
        if provider is not None and provider.kind != kind:
            raise _not_found()
        assert name is not None
        if provider is not None and kind == "openai" and not allowed(provider.model_allowlist, name):
            raise _not_found()
        upstream = name
        defaults = {"system_prompt": "", "options": {}}
        display = name
    if provider is None or not provider.enabled:
        raise _not_found()
    adapter = get_registry(runtime).build(provider, read_api_key(get_secret_store(runtime), provider))
    return ResolvedModel(
        provider=provider,
        adapter=adapter,
        upstream_model=upstream,
        defaults=defaults,
        model_id=model_id,
        name=display,
    )


def _resolve_group(session: Session, runtime: Runtime, model_id: str, group: str, name: str) -> ResolvedModel:
    providers = routing.group_providers(session, group)
    if not providers:
        raise _not_found()
    targets = routing.group_targets(runtime, providers, name)
    return ResolvedModel(
        provider=providers[0],
        adapter=routing.routed_adapter(runtime, targets),
        upstream_model=name,
        defaults={"system_prompt": "", "options": {}},
        model_id=model_id,
        name=name,
    )


def _resolve_route(session: Session, runtime: Runtime, model_id: str, route_id: uuid.UUID) -> ResolvedModel:
    route = session.get(ModelRoute, route_id)
    if route is None or not route.enabled:
        raise _not_found()
    usable = model_routes.usable_targets(session, route)
    if not usable:
        raise _not_found()
    targets = model_routes.route_targets(session, runtime, route)
    return ResolvedModel(
        provider=usable[0][0],
        adapter=routing.routed_adapter(runtime, targets),
        upstream_model=targets[0].upstream_model,
        defaults={"system_prompt": "", "options": {}},
        model_id=model_id,
        name=route.name,
    )


def load_routes(session: Session) -> list[tuple[uuid.UUID, str, list[ModelProviderRef]]]:
    """The enabled routes with at least one usable target: (id, name, the targets' providers)."""
    out = []
    for route in session.scalars(
        select(ModelRoute).where(ModelRoute.enabled.is_(True)).order_by(ModelRoute.name)
    ):
        refs = [
            ModelProviderRef(id=p.id, name=p.name, kind=p.kind)
            for p, _ in model_routes.usable_targets(session, route)
        ]
        if refs:
            out.append((route.id, route.name, refs))
    return out


# --- discovery -------------------------------------------------------------------------------------


def allowed(allowlist: list[str] | None, name: str) -> bool:
    """Whether an OpenAI-compatible provider offers ``name`` (an empty allow-list offers everything)."""
    return not allowlist or name in allowlist


@dataclass(frozen=True)
class ProviderSnapshot:
    """The columns discovery needs, detached from the session (used on the event loop)."""

    id: uuid.UUID
    name: str
    kind: str
    base_url: str
    model_allowlist: tuple[str, ...] = ()
    #: OpenAI-compatible providers: the key read from the key store (never shown, never cached as is).
    api_key: str | None = field(default=None, repr=False)
    #: Why the key could not be read, as ``(code, message)``: reported instead of asking the upstream.
    key_error: tuple[str, str] | None = None
    #: Ollama providers: the host group (None: none).
    group: str | None = None
    is_default: bool = False

    @classmethod
    def of(cls, row: Provider) -> ProviderSnapshot:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            base_url=row.base_url,
            model_allowlist=tuple(row.model_allowlist or ()),
            group=row.host_group if row.kind == "ollama" else None,
            is_default=bool(row.is_default),
        )

    @property
    def cache_key(self) -> tuple[uuid.UUID, str]:
        """Where its list is cached: a new URL or key asks the upstream again."""
        if self.kind != "openai" or not self.api_key:
            return (self.id, self.base_url)
        digest = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        return (self.id, f"{self.base_url}#{digest}")

    def ref(self) -> ModelProviderRef:
        return ModelProviderRef(id=self.id, name=self.name, kind=self.kind)


class ModelDiscovery:
    """Lists of models per provider (Ollama's ``/api/tags``, an OpenAI-compatible ``/v1/models``), cached
    for ``ttl`` seconds (errors too, so a provider that is down is not asked again on every page load);
    concurrent callers share one upstream request."""

    def __init__(self, ttl: float, timeout: float) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[tuple[uuid.UUID, str], tuple[float, list[ModelInfo] | tuple[str, str]]] = {}
        self._inflight: dict[tuple[uuid.UUID, str], asyncio.Future[list[ModelInfo] | tuple[str, str]]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def models(self, registry: ProviderRegistry, provider: ProviderSnapshot) -> list[ModelInfo]:
        if provider.key_error is not None:
            raise ProviderError(*provider.key_error)
        key = provider.cache_key
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            result = hit[1]
        else:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.ensure_future(self._fetch(registry, provider, key))
                self._inflight[key] = task
                task.add_done_callback(lambda _t: self._inflight.pop(key, None))
            result = await asyncio.shield(task)
        if isinstance(result, tuple):
            code, message = result
            raise ProviderError(code, message)
        return result

    async def _fetch(
        self, registry: ProviderRegistry, provider: ProviderSnapshot, key: tuple[uuid.UUID, str]
    ) -> list[ModelInfo] | tuple[str, str]:
        adapter = registry.build_for(provider.kind, provider.base_url, provider.api_key)
        what = "Ollama" if provider.kind == "ollama" else "the OpenAI-compatible server"
        result: list[ModelInfo] | tuple[str, str]
        try:
            with anyio.fail_after(self.timeout):
                result = await adapter.list_models(timeout=self.timeout)
        except TimeoutError:
            result = ("upstream_timeout", f"{what} did not list its models within {self.timeout:g} s")
        except ProviderError as exc:
            result = (exc.code, exc.message)
        except Exception:
            log.exception("model discovery failed for provider %s", provider.id)
            result = ("upstream_error", "listing the models failed")
        self._cache[key] = (time.monotonic() + self.ttl, result)
        return result


def get_discovery(runtime: Runtime) -> ModelDiscovery:
    if runtime.model_discovery is None:
        settings = runtime.settings
        runtime.model_discovery = ModelDiscovery(
            settings.models_cache_seconds, settings.models_discovery_timeout
        )
    return runtime.model_discovery


def _snapshot(row: Provider, secrets: SecretStore) -> ProviderSnapshot:
    snapshot = ProviderSnapshot.of(row)
    if row.kind != "openai":
        return snapshot
    try:
        key = read_api_key(secrets, row)
    except DomainError as exc:
        return dataclasses.replace(snapshot, key_error=(exc.code, exc.message))
    return dataclasses.replace(snapshot, api_key=key)


def _load_catalog(
    session: Session, secrets: SecretStore, user_id: uuid.UUID
) -> tuple[list[ProviderSnapshot], list[tuple[ModelConfig, ProviderSnapshot]]]:
    providers = session.scalars(
        select(Provider).where(Provider.enabled.is_(True)).order_by(Provider.name)
    ).all()
    snapshots = {p.id: _snapshot(p, secrets) for p in providers}
    configs = session.scalars(
        select(ModelConfig)
        .where(
            ModelConfig.enabled.is_(True),
            or_(ModelConfig.owner_id.is_(None), ModelConfig.owner_id == user_id),  # shared + the caller's
        )
        .order_by(ModelConfig.name, ModelConfig.id)
    ).all()
    pairs = [(c, snapshots[c.provider_id]) for c in configs if c.provider_id in snapshots]
    for config, _ in pairs:
        session.expunge(config)  # read on the event loop afterwards
    return list(snapshots.values()), pairs


def _chat_capable(capabilities: Sequence[str]) -> bool:
    return "completion" in capabilities or "embedding" not in capabilities


async def list_models(
    session: Session, runtime: Runtime, user_id: uuid.UUID, capability: ModelCapability | None = None
) -> ModelList:
    """Presets (the shared ones and ``user_id``'s own) plus the models each provider lists live; a provider
    that fails is reported in ``errors`` (with its name) while the others still list. Without
    ``capability``: the models one can chat with (an embedding-only model is left out); with it: the
    models that have it (``embedding`` for a knowledge collection's embedder)."""
    providers, configs = await anyio.to_thread.run_sync(
        _load_catalog, session, get_secret_store(runtime), user_id
    )
    registry = get_registry(runtime)
    discovery = get_discovery(runtime)
    listing = [p for p in providers if p.kind in ("ollama", "openai")]

    async def one(provider: ProviderSnapshot) -> list[ModelInfo] | ProviderError:
        try:
            return await discovery.models(registry, provider)
        except ProviderError as exc:
            return exc

    results = await asyncio.gather(*(one(p) for p in listing))
    discovered: dict[uuid.UUID, list[ModelInfo]] = {}
    errors: list[ModelListError] = []
    for provider, result in zip(listing, results, strict=True):
        if isinstance(result, ProviderError):
            errors.append(
                ModelListError(
                    provider_id=provider.id, provider=provider.ref(), code=result.code, message=result.message
                )
            )
        else:
            discovered[provider.id] = result

    items: list[ModelRead] = []
    for config, provider in configs:
        capabilities: tuple[str, ...] = ("completion",)
        if provider.kind == "ollama":
            wanted = display_model_name(config.model).lower()
            for info in discovered.get(provider.id, []):
                if display_model_name(info.name).lower() == wanted:
                    capabilities = info.capabilities
                    break
        items.append(
            ModelRead(
                id=config_model_id(config.id),
                name=config.name,
                provider=provider.ref(),
                model=config.model,
                capabilities=list(capabilities),
                source="config",
                shared=config.owner_id is None,
                defaults=ModelDefaults(
                    system_prompt=config.system_prompt or "",
                    temperature=config.temperature,
                    top_p=config.top_p,
                    context_length=config.context_length,
                    max_tokens=config.max_tokens,
                    options=dict(config.options or {}),
                ),
            )
        )
    for route_id, route_name, refs in await anyio.to_thread.run_sync(load_routes, session):
        items.append(
            ModelRead(
                id=route_model_id(route_id),
                name=route_name,
                provider=refs[0],
                model=route_name,
                capabilities=["completion"],
                source="route",
                defaults=ModelDefaults(),
                hosts=refs,
            )
        )
    grouped: dict[tuple[str, str], ModelRead] = {}
    for provider in sorted(listing, key=lambda p: not p.is_default):  # a group's default host first
        if provider.kind == "openai":
            items.extend(_openai_items(provider, discovered.get(provider.id, [])))
            continue
        for info in discovered.get(provider.id, []):
            if not is_valid_model_name(info.name):
                continue
            if provider.group is not None:
                # One model per (group, name), served by every host of the group that lists it.
                shared = grouped.get((provider.group, info.name))
                if shared is not None:
                    shared.hosts.append(provider.ref())
                    continue
                item = ModelRead(
                    id=group_model_id(provider.group, info.name),
                    name=info.name,
                    provider=provider.ref(),
                    model=info.name,
                    capabilities=list(info.capabilities),
                    source="ollama",
                    defaults=ModelDefaults(),
                    group=provider.group,
                    hosts=[provider.ref()],
                )
                grouped[(provider.group, info.name)] = item
                items.append(item)
                continue
            items.append(
                ModelRead(
                    id=ollama_model_id(provider.id, info.name),
                    name=info.name,
                    provider=provider.ref(),
                    model=info.name,
                    capabilities=list(info.capabilities),
                    source="ollama",
                    defaults=ModelDefaults(),
                )
            )
    if capability is None:
        items = [i for i in items if _chat_capable(i.capabilities)]
    else:
        items = [i for i in items if capability in i.capabilities]
    return ModelList(items=items, errors=errors)


def _openai_capabilities(name: str) -> list[str]:
    """OpenAI's model list says nothing of what a model does: a name with "embed" in it (OpenAI's
    text-embedding-3-*, nomic-embed-text, mxbai-embed-large...) is taken for an embedding model."""
    return ["embedding"] if "embed" in name.lower() else ["completion"]


def _openai_items(provider: ProviderSnapshot, infos: list[ModelInfo]) -> list[ModelRead]:
    """What an OpenAI-compatible provider lists, narrowed to its allow-list (empty: all of it)."""
    return [
        ModelRead(
            id=openai_model_id(provider.id, info.name),
            name=info.name,
            provider=provider.ref(),
            model=info.name,
            capabilities=_openai_capabilities(info.name),
            source="openai",
            defaults=ModelDefaults(),
        )
        for info in infos
        if is_valid_remote_name(info.name) and allowed(list(provider.model_allowlist), info.name)
    ]
