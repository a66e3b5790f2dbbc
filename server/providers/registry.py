"""Builds adapters for provider rows, all sharing one HTTP client per app.

The client follows no redirects, ignores proxy environment variables, keeps no cookies, and checks the
address of every new connection against :mod:`server.providers.netpolicy` (so a host name that later
resolves to a metadata address is still refused: DNS rebinding).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from http.cookiejar import Cookie, CookieJar
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpcore
import httpx

from server import __version__
from server.providers.base import ChatProvider, Timeouts
from server.providers.netpolicy import addresses_of, blocked_reason, literal_address
from server.providers.ollama import OllamaProvider
from server.providers.openai_compat import OpenAICompatProvider

if TYPE_CHECKING:
    from server.runtime import Runtime

REGISTRY_KEY = "provider_registry"


class ProviderRow(Protocol):
    """What the registry needs from a ``Provider`` row."""

    kind: str
    base_url: str


class _NoCookies(CookieJar):
    """A cookie jar that never stores anything: upstream ``Set-Cookie`` headers are dropped."""

    def set_cookie(self, cookie: Cookie) -> None:  # noqa: D102
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:  # noqa: D102
        return None


class _BatchedWrites(httpcore.AsyncNetworkStream):
    """A connection whose writes wait for the next read: httpcore writes a request's head and then its
    body, and only then reads the answer, so both leave in one write (one wake-up of the upstream)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._pending: list[bytes] = []
        self._size = 0
        self._timeout: float | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._pending.append(buffer)
        self._size += len(buffer)
        self._timeout = timeout
        if self._size >= 65536:  # a large body is streamed, not collected
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            await self._inner.write(data, timeout=self._timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush()
        return await self._inner.read(max_bytes, timeout=timeout)

    async def aclose(self) -> None:
        self._pending.clear()
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        await self._flush()
        return _BatchedWrites(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses blocked addresses, then connects to a checked address."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                with anyio.fail_after(timeout):
                    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
            addresses = addresses_of(infos)
        for address in addresses:
            reason = blocked_reason(address)
            if reason:
                raise httpcore.ConnectError(f"blocked address: the host resolves to {reason}")
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        last: Exception | None = None
        for address in addresses:
            try:
                return _BatchedWrites(await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                ))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for providers")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False, retries=0)
        # Same pool httpx builds, with the guarded network backend (httpx has no public switch for it).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_GuardedBackend(),
        )


def new_http_client(max_connections: int = 256, max_keepalive: int = 64) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_keepalive, keepalive_expiry=30.0
    )
    return httpx.AsyncClient(
        transport=_GuardedTransport(limits),
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
    """The app's registry (``runtime.extras["provider_registry"]``), created on first use."""
    registry = runtime.extras.get(REGISTRY_KEY)
    if registry is None:
        with _create_lock:
            registry = runtime.extras.get(REGISTRY_KEY)
            if registry is None:
                registry = runtime.extras[REGISTRY_KEY] = registry_from_settings(runtime.settings)
    return registry


async def close_registry(runtime: Runtime) -> None:
    registry = runtime.extras.pop(REGISTRY_KEY, None)
    if registry is not None:
        await registry.aclose()
