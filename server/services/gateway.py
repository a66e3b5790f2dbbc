"""The ``/v1`` model ids and the model list of the OpenAI-compatible gateway.

A ``/v1`` id is stable and human-readable (never the UI's opaque catalog id of services/models.py):

* a model of the default Ollama provider is its own name: ``llama3.2:latest``;
* a model of any other provider is ``<provider slug>/<model>``; the slug is the provider's name in lower
  case with every run of characters outside ``[a-z0-9]`` turned into one ``-`` (``"Work GPU #2"`` ->
  ``work-gpu-2``; an empty result is ``provider``). Two providers with the same slug: the older one
  (created first, then the smaller id) keeps it, the next ones get ``-2``, ``-3``... in that order;
* a preset (model configuration) is its name: the shared presets and the key owner's own; the owner's
  own wins over a shared one of the same name;
* an explicit route (services/model_routes.py) is its name.

* a model of a **host group** (Ollama providers in one group, services/routing.py) is listed once, served
  by every host of the group: its own name when the group holds the default Ollama provider, else
  ``<group slug>/<model>`` (the group's name made a slug as above: ``"GPU-Farm"`` -> ``gpu-farm``). A
  group's slug wins over a provider's slug of the same spelling; the provider's own models are then
  reached through the group.

An id is read in that order: a preset name first, then a route name, then ``<slug>/`` of a host group,
then ``<slug>/`` of a provider that is not the default Ollama provider, then a model name of the default
Ollama provider (its group's model when it is in one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.db import catalog_generation
from server.db.models import ModelConfig, Provider
from server.db.session import session_scope
from server.errors import NotFound
from server.providers.base import ChatProvider, ModelInfo, ProviderError
from server.providers.model_names import display_model_name, is_valid_model_name
from server.providers.registry import get_registry
from server.providers.routed import RoutedProvider
from server.security.secret_store import get_secret_store
from server.services import models as models_service
from server.services.providers import read_api_key

if TYPE_CHECKING:
    from server.runtime import Runtime

_NOT_SLUG = re.compile(r"[^a-z0-9]+")

#: Whether the caller may use a ``/v1`` model id (the API key's model allow-list).
ModelFilter = Callable[[str], bool]


def provider_slug(name: str) -> str:
    """``"Work GPU #2"`` -> ``"work-gpu-2"``: lower case, ``[a-z0-9-]``, no leading/trailing ``-``."""
    return _NOT_SLUG.sub("-", name.lower()).strip("-") or "provider"


def provider_slugs(providers: list[tuple[uuid.UUID, str, Any]]) -> dict[uuid.UUID, str]:
    """``(id, name, created_at)`` -> slug, clashes settled by age then id (module docstring)."""
    taken: set[str] = set()
    out: dict[uuid.UUID, str] = {}
    for provider_id, name, _created in sorted(providers, key=lambda p: (p[2] is None, p[2] or 0, str(p[0]))):
        base = provider_slug(name)
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug)
        out[provider_id] = slug
    return out


def not_found(model_id: str) -> NotFound:
    return NotFound(
        f"The model '{model_id[:200]}' does not exist or you do not have access to it.",
        code="model_not_found",
    )


@dataclass(frozen=True)
class IdMap:
    """What translating ``/v1`` ids needs: read from the database once per request."""

    default_ollama: uuid.UUID | None
    #: provider id -> (slug, kind, name), enabled providers only
    providers: dict[uuid.UUID, tuple[str, str, str]]
    #: preset name -> config id (shared ones and the caller's own; the own one wins)
    presets: dict[str, uuid.UUID]
    #: provider id -> its host group (enabled Ollama providers in a group only)
    groups: dict[uuid.UUID, str] = dataclasses.field(default_factory=dict)
    #: route name -> (route id, the providers of its usable targets), enabled routes only
    routes: dict[str, tuple[uuid.UUID, tuple[uuid.UUID, ...]]] = dataclasses.field(default_factory=dict)

    def group_slug(self, group: str) -> str:
        return provider_slug(group)

    def group_by_slug(self, slug: str) -> str | None:
        for group in self.groups.values():
            if provider_slug(group) == slug:
                return group
        return None

    def provider_by_slug(self, slug: str) -> uuid.UUID | None:
        for provider_id, (s, _kind, _name) in self.providers.items():
            if s == slug and provider_id != self.default_ollama:
                return provider_id
        return None

    def v1_id(self, provider_id: uuid.UUID, model: str) -> str:
        group = self.groups.get(provider_id)
        if group is not None:
            if self.default_ollama is not None and self.groups.get(self.default_ollama) == group:
                return model
            return f"{provider_slug(group)}/{model}"
        if provider_id == self.default_ollama:
            return model
        return f"{self.providers[provider_id][0]}/{model}"

    def catalog_id(self, model_id: str) -> str:
        """The services/models.py id of a ``/v1`` id; NotFound(model_not_found) if none."""
        config_id = self.presets.get(model_id)
        if config_id is not None:
            return models_service.config_model_id(config_id)
        route = self.routes.get(model_id)
        if route is not None:
            return models_service.route_model_id(route[0])
        slug, sep, rest = model_id.partition("/")
        group = self.group_by_slug(slug) if sep else None
        if group is not None:
            if is_valid_model_name(rest):
                return models_service.group_model_id(group, rest)
            raise not_found(model_id)
        provider_id = self.provider_by_slug(slug) if sep else None
        if provider_id is not None and rest:
            kind = self.providers[provider_id][1]
            if kind == "ollama":
                if is_valid_model_name(rest):
                    return models_service.ollama_model_id(provider_id, rest)
            elif models_service.is_valid_remote_name(rest):
                return models_service.openai_model_id(provider_id, rest)
            raise not_found(model_id)
        if self.default_ollama is not None and is_valid_model_name(model_id):
            default_group = self.groups.get(self.default_ollama)
            if default_group is not None:
                return models_service.group_model_id(default_group, model_id)
            return models_service.ollama_model_id(self.default_ollama, model_id)
        raise not_found(model_id)


def load_id_map(session: Session, user_id: uuid.UUID) -> IdMap:
    rows = session.execute(
        select(
            Provider.id,
            Provider.name,
            Provider.kind,
            Provider.is_default,
            Provider.created_at,
            Provider.host_group,
        ).where(Provider.enabled.is_(True))
    ).all()
    slugs = provider_slugs([(r.id, r.name, r.created_at) for r in rows])
    default = next((r.id for r in rows if r.is_default and r.kind == "ollama"), None)
    configs = session.execute(
        select(ModelConfig.id, ModelConfig.name, ModelConfig.owner_id)
        .where(
            ModelConfig.enabled.is_(True),
            ModelConfig.provider_id.in_([r.id for r in rows]),
            or_(ModelConfig.owner_id.is_(None), ModelConfig.owner_id == user_id),
        )
        .order_by(ModelConfig.id)
    ).all()
    presets: dict[str, uuid.UUID] = {}
    for config in sorted(configs, key=lambda c: (c.owner_id is None, str(c.id))):  # own ones first
        presets.setdefault(config.name, config.id)
    return IdMap(
        default_ollama=default,
        providers={r.id: (slugs[r.id], r.kind, r.name) for r in rows},
        presets=presets,
        groups={r.id: r.host_group for r in rows if r.kind == "ollama" and r.host_group},
        routes={
            name: (route_id, tuple(ref.id for ref in refs))
            for route_id, name, refs in models_service.load_routes(session)
        },
    )


def v1_model_id(session: Session, user_id: uuid.UUID, resolved: models_service.ResolvedModel) -> str:
    """The ``/v1`` id of a model the UI chat resolved: usage records name every model the way ``/v1``
    does, whichever door the request came through."""
    if models_service.parse_route_id(resolved.model_id) is not None:
        return resolved.name
    grouped = models_service.parse_group_id(resolved.model_id)
    kind = "group" if grouped is not None else models_service.parse_model_id(resolved.model_id)[0]
    if kind == "cfg":
        return resolved.name
    id_map = load_id_map(session, user_id)
    if resolved.provider.id not in id_map.providers:
        return resolved.model_id
    return id_map.v1_id(resolved.provider.id, resolved.upstream_model)


@dataclass(frozen=True)
class Resolution:
    """A ``/v1`` id resolved: what the chat needs, less the adapter (built per request: adapters keep
    per-stream counters), and the catalog generation it was read at."""

    resolved: models_service.ResolvedModel
    provider: models_service.ProviderSnapshot
    api_key: str | None
    generation: str | None


class ResolutionCache:
    """``(user, /v1 id)`` -> :class:`Resolution`, for one catalog generation at a time
    (server/db/catalog_generation.py): each ``/v1`` request reads the generation with its API key, in the
    same query round, so a change to a provider or a preset made on any instance applies to the very next
    request, and a request for a known model skips the database and the worker thread. Used on the event
    loop only."""

    MAX_ENTRIES = 1024

    def __init__(self) -> None:
        self._generation: str | None = None
        self._entries: dict[tuple[uuid.UUID, str], Resolution] = {}

    def get(self, generation: str | None, user_id: uuid.UUID, model_id: str) -> Resolution | None:
        if generation != self._generation:
            return None
        return self._entries.get((user_id, model_id))

    def put(self, user_id: uuid.UUID, model_id: str, resolution: Resolution) -> None:
        if resolution.generation != self._generation:
            self._entries.clear()
            self._generation = resolution.generation
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))  # the oldest
        self._entries[(user_id, model_id)] = resolution


def resolution_cache(runtime: Runtime) -> ResolutionCache:
    cache = runtime.gateway_resolutions
    if cache is None:
        cache = runtime.gateway_resolutions = ResolutionCache()
    return cache


def resolve(runtime: Runtime, user_id: uuid.UUID, model_id: str) -> Resolution:
    """A ``/v1`` id -> the model the UI chat would use, and its provider (for its model list).
    Blocking: call from a thread."""
    with session_scope(runtime.session_factory) as session:
        generation = catalog_generation.read(session)
        catalog_id = load_id_map(session, user_id).catalog_id(model_id)
        try:
            resolved = models_service.resolve_model(session, runtime, catalog_id, user_id=user_id)
        except NotFound:
            raise not_found(model_id) from None
        return Resolution(
            resolved=resolved,
            provider=models_service.ProviderSnapshot.of(resolved.provider),
            api_key=read_api_key(get_secret_store(runtime), resolved.provider),
            generation=generation,
        )


async def resolve_cached(
    runtime: Runtime, user_id: uuid.UUID, model_id: str, generation: str | None
) -> tuple[models_service.ResolvedModel, models_service.ProviderSnapshot]:
    """:func:`resolve` through the :class:`ResolutionCache`, with ``generation`` as read by this request
    (with its key); the adapter is new each time."""
    cache = resolution_cache(runtime)
    found = cache.get(generation, user_id, model_id)
    if found is None:
        found = await anyio.to_thread.run_sync(resolve, runtime, user_id, model_id)
        cache.put(user_id, model_id, found)
    resolved = found.resolved
    adapter: ChatProvider
    if isinstance(resolved.adapter, RoutedProvider):  # a host group's model: routed, per request
        adapter = resolved.adapter.fresh()
    else:
        adapter = get_registry(runtime).build(resolved.provider, found.api_key)
    return dataclasses.replace(resolved, adapter=adapter), found.provider


async def capabilities(
    runtime: Runtime, provider: models_service.ProviderSnapshot, model: str
) -> tuple[str, ...] | None:
    """An Ollama model's capabilities from the (cached) model list; None when unknown (another kind of
    provider, or a model the list does not show)."""
    if provider.kind != "ollama":
        return None
    try:
        infos = await models_service.get_discovery(runtime).models(get_registry(runtime), provider)
    except ProviderError:
        return None
    wanted = display_model_name(model).lower()
    for info in infos:
        if display_model_name(info.name).lower() == wanted:
            return info.capabilities
    return None


# --- GET /v1/models -----------------------------------------------------------------------------------


def _model_object(model_id: str, created: Any, owned_by: str) -> dict[str, Any]:
    timestamp = int(created.timestamp()) if hasattr(created, "timestamp") else 0
    return {"id": model_id, "object": "model", "created": timestamp, "owned_by": owned_by}


def _load(runtime: Runtime, user_id: uuid.UUID) -> tuple[IdMap, Any, dict[uuid.UUID, Any]]:
    with session_scope(runtime.session_factory) as session:
        id_map = load_id_map(session, user_id)
        snapshots, configs = models_service._load_catalog(session, get_secret_store(runtime), user_id)
        created = {r.id: r.created_at for r in session.execute(select(Provider.id, Provider.created_at))}
        return id_map, (snapshots, [(c.name, c.created_at, p) for c, p in configs]), created


async def list_models(runtime: Runtime, user_id: uuid.UUID, allowed: ModelFilter) -> list[dict[str, Any]]:
    """Every model the caller may use, as OpenAI model objects (presets, then each provider's models);
    a provider that cannot be reached is left out."""
    id_map, (snapshots, presets), created = await anyio.to_thread.run_sync(_load, runtime, user_id)
    registry = get_registry(runtime)
    discovery = models_service.get_discovery(runtime)
    listing = [p for p in snapshots if p.kind in ("ollama", "openai") and p.id in id_map.providers]

    async def one(provider: models_service.ProviderSnapshot) -> list[ModelInfo]:
        try:
            return await discovery.models(registry, provider)
        except ProviderError:
            return []

    results = await asyncio.gather(*(one(p) for p in listing))
    seen: set[str] = set()
    items: list[dict[str, Any]] = []

    def add(model_id: str, when: Any, owned_by: str) -> None:
        if model_id not in seen and allowed(model_id):
            seen.add(model_id)
            items.append(_model_object(model_id, when, owned_by))

    for name, when, provider in presets:
        if id_map.presets.get(name) is not None:
            add(name, when, provider.name)
    for name in sorted(id_map.routes):
        if id_map.presets.get(name) is None:  # a preset of that name shadows it
            add(name, None, "route")
    for provider, infos in zip(listing, results, strict=True):
        for info in infos:
            if provider.kind == "ollama":
                if not is_valid_model_name(info.name):
                    continue
            elif not models_service.is_valid_remote_name(info.name) or not models_service.allowed(
                list(provider.model_allowlist), info.name
            ):
                continue
            v1_id = id_map.v1_id(provider.id, info.name)
            if id_map.presets.get(v1_id) is None:  # a preset of that name shadows it
                # a host group's model appears once (``seen``), owned by the group
                owner = id_map.groups.get(provider.id) or provider.name
                add(v1_id, created.get(provider.id), owner)
    return items


async def get_model(
    runtime: Runtime, user_id: uuid.UUID, allowed: ModelFilter, model_id: str
) -> dict[str, Any]:
    for item in await list_models(runtime, user_id, allowed):
        if item["id"] == model_id:
            return item
    raise not_found(model_id)
