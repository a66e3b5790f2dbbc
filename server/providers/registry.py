"""Builds adapters for provider rows, all sharing one HTTP client per app.

The client follows no redirects, ignores proxy environment variables, keeps no cookies, and checks the
address of every new connection against :mod:`server.providers.netpolicy` (so a host name that later
resolves to a metadata address is still refused: DNS rebinding); see :mod:`server.providers.transport`.
"""

from __future__ import annotations

import threading
from http.cookiejar import Cookie, CookieJar
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from server import __version__
from server.providers.base import ChatProvider, Timeouts
from server.providers.ollama import OllamaProvider
from server.providers.openai_compat import OpenAICompatProvider

if TYPE_CHECKING:
    from server.runtime import Runtime


class ProviderRow(Protocol):
    """What the registry needs from a ``Provider`` row."""

    kind: str
    base_url: str


class _NoCookies(CookieJar):
    """A cookie jar that never stores anything: upstream ``Set-Cookie`` headers are dropped."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def new_http_client(max_connections: int = 256, max_keepalive: int = 64) -> httpx.AsyncClient:
    # Imported here: aiohttp costs ~11 MiB and ~100 ms, paid on the first upstream call, not at start-up.
    from server.providers.transport import AiohttpTransport

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_keepalive, keepalive_expiry=30.0
    )
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits),
        follow_redirects=False,
        trust_env=False,
        cookies=_NoCookies(),  # used as the jar itself (a Cookies object would be copied)
        timeout=httpx.Timeout(10.0, connect=5.0),
        headers={"User-Agent": f"ModelTrain/{__version__}"},
    )


class ProviderRegistry:
    """Per-app factory of adapters. ``build`` is cheap: adapters share :attr:`client`."""

    def __init__(
        self,
        *,
        timeouts: Timeouts = Timeouts(),
        max_connections: int = 256,
        max_keepalive: int = 64,
        discovery_timeout: float = 3.0,
    ) -> None:
        self.timeouts = timeouts
        self.discovery_timeout = discovery_timeout
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._client: httpx.AsyncClient | None = None
        self._lock = threading.Lock()
        #: (model name, digest) -> capabilities, filled from Ollama's /api/show.
        self.capability_cache: dict[tuple[str, str], tuple[str, ...]] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = new_http_client(self._max_connections, self._max_keepalive)
            return self._client

    def build(self, provider: ProviderRow, api_key: str | None = None) -> ChatProvider:
        """An adapter for ``provider`` (a ``Provider`` row or anything with ``kind`` and ``base_url``)."""
        return self.build_for(provider.kind, provider.base_url, api_key)

    def build_for(self, kind: str, base_url: str, api_key: str | None = None) -> ChatProvider:
        if kind == "ollama":
            return OllamaProvider(base_url, self.client, capability_cache=self.capability_cache)
        if kind == "openai":
            return OpenAICompatProvider(base_url, self.client, api_key=api_key)
        raise ValueError(f"unknown provider kind {kind!r}")

    async def aclose(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def registry_from_settings(settings: Any) -> ProviderRegistry:
    return ProviderRegistry(
        timeouts=Timeouts(
            connect=settings.chat_connect_timeout,
            first_token=settings.chat_first_token_timeout,
            idle=settings.chat_idle_timeout,
        ),
        max_connections=settings.provider_max_connections,
        discovery_timeout=settings.models_discovery_timeout,
    )


_create_lock = threading.Lock()


def get_registry(runtime: Runtime) -> ProviderRegistry:
    """The app's registry (``runtime.provider_registry``), created on first use."""
    registry = runtime.provider_registry
    if registry is None:
        with _create_lock:
            registry = runtime.provider_registry
            if registry is None:
                registry = runtime.provider_registry = registry_from_settings(runtime.settings)
    return registry


async def close_registry(runtime: Runtime) -> None:
    registry, runtime.provider_registry = runtime.provider_registry, None
    if registry is not None:
        await registry.aclose()
