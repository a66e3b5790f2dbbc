"""One model served by several targets (hosts): the routing decision, host health and failover.

A **target** is a (host, upstream model) pair with a priority and a weight. :class:`RoutedProvider`
implements the :class:`~server.providers.base.ChatProvider` interface over several targets:

* **Choice** (:meth:`HostHealthBook.plan`): the available targets of the best priority (the smallest
  number) come first, in weighted random order (Efraimidis-Spirakis keys, so the first pick is exactly
  proportional to the weights), or, with the ``least_busy`` strategy, fewest streams in flight on this
  instance first; then the next priority, and so on. When no target is available, every target the model
  is not known to be missing on is tried, the soonest due first (a last resort, never a refusal without
  trying).
* **Failover**: a connect error, a timeout, or a 5xx/429 answer *before the first event* moves the
  request to the next target, at most ``retries`` times. A 404 (model not found) marks only that target
  missing for that model and moves on without using a retry. Once an event has been yielded the stream
  belongs to that target: a later failure is the client's error, never a retry.
* **Health**: consecutive failures put a host in a cool-down of ``cooldown * 2**(failures-1)`` seconds,
  capped at ``cooldown_max``; a successful request or probe clears it. Probes (services/routing.py) set
  ``down`` when a host does not answer.

All hosts failing gives one :class:`~server.providers.base.ProviderError` ``all_hosts_failed`` (502)
that names each host and why.

This module does no I/O of its own except through the adapters and :func:`probe`, and keeps its state
in a :class:`HostHealthBook` that the app owns (``Runtime.routing``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from server.providers.base import (
    ChatEvent,
    ChatProvider,
    ChatRequest,
    Done,
    ModelInfo,
    ProviderError,
    Timeouts,
)

HostState = Literal["healthy", "cooling_down", "down", "disabled"]
Strategy = Literal["weighted", "least_busy"]

#: Errors before the first event that move a request to the next target.
RETRYABLE = frozenset(
    {"upstream_unreachable", "upstream_timeout", "upstream_busy", "upstream_rate_limited", "upstream_error"}
)
#: Of those, the ones that say nothing about the host's health (it answered, it is only busy).
_NOT_A_HOST_FAILURE = frozenset({"upstream_busy", "upstream_rate_limited"})


@dataclass(frozen=True)
class Target:
    """One way to serve a model: a host (``key``: the provider id as text) and the model's name there."""

    key: str
    name: str
    adapter: ChatProvider
    upstream_model: str
    priority: int = 0
    weight: float = 1.0


@dataclass
class HostHealth:
    """What this instance knows of one host."""

    consecutive_failures: int = 0
    #: Clock time until which the host is cooling down (0: not cooling down).
    cooldown_until: float = 0.0
    #: The last probe's verdict: None before the first probe.
    probe_ok: bool | None = None
    probe_latency_ms: float | None = None
    last_error: str | None = None
    streams_in_flight: int = 0
    #: Upstream model names this host answered 404 for (left out of routing until its next good probe).
    missing: set[str] = field(default_factory=set)


class HostHealthBook:
    """Health and load of every host, the routing decision, and the wake-up of the probe loop.

    ``clock`` (monotonic seconds) and ``rng`` are injectable so tests control time and chance.
    """

    def __init__(
        self,
        *,
        retries: int = 2,
        strategy: Strategy = "weighted",
        cooldown: float = 2.0,
        cooldown_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.retries = retries
        self.strategy: Strategy = strategy
        self.cooldown = cooldown
        self.cooldown_max = cooldown_max
        self.clock = clock
        self.rng = rng or random.Random()
        self.hosts: dict[str, HostHealth] = {}
        #: Called when a host starts a cool-down, so the probe loop can re-plan its next wake-up.
        self.on_cooldown: Callable[[], None] | None = None

    def host(self, key: str) -> HostHealth:
        health = self.hosts.get(key)
        if health is None:
            health = self.hosts[key] = HostHealth()
        return health

    # --- state ---------------------------------------------------------------------------------------

    def state(self, key: str, *, enabled: bool = True) -> HostState:
        if not enabled:
            return "disabled"
        health = self.hosts.get(key)
        if health is None:
            return "healthy"
        if health.probe_ok is False:  # the last probe failed (it is probed again with the cool-down)
            return "down"
        if health.cooldown_until > self.clock():
            return "cooling_down"
        return "healthy"

    def available(self, key: str, model: str | None = None) -> bool:
        health = self.hosts.get(key)
        if health is None:
            return True
        if model is not None and model in health.missing:
            return False
        return health.cooldown_until <= self.clock() and health.probe_ok is not False

    def due(self) -> float | None:
        """The earliest clock time a cooling-down host is due for a probe (None: none is cooling down)."""
        now = self.clock()
        pending = [h.cooldown_until for h in self.hosts.values() if h.cooldown_until > now]
        return min(pending) if pending else None

    def record_success(self, key: str) -> None:
        health = self.host(key)
        health.consecutive_failures = 0
        health.cooldown_until = 0.0

    def record_failure(self, key: str, error: str) -> None:
        health = self.host(key)
        health.consecutive_failures += 1
        health.last_error = error
        delay = min(self.cooldown * 2 ** min(health.consecutive_failures - 1, 30), self.cooldown_max)
        health.cooldown_until = self.clock() + delay
        if self.on_cooldown is not None:
            self.on_cooldown()

    def record_missing(self, key: str, model: str, error: str) -> None:
        health = self.host(key)
        health.missing.add(model)
        health.last_error = error

    def record_probe(self, key: str, ok: bool, *, latency_ms: float | None, error: str | None) -> None:
        """A probe's verdict. Success ends a cool-down (the host is back); failure counts as one."""
        health = self.host(key)
        health.probe_ok = ok
        health.probe_latency_ms = latency_ms
        if ok:
            self.record_success(key)
            # Models it answered 404 for are tried again (once each) after every successful probe: one
            # may have been pulled there since.
            health.missing.clear()
        else:
            self.record_failure(key, error or "the host did not answer the probe")

    # --- the decision --------------------------------------------------------------------------------

    def plan(
        self, targets: Sequence[Target], model_of: Callable[[Target], str] | None = None
    ) -> list[Target]:
        """The order in which to try ``targets`` (module docstring). Cheap: no I/O, no allocation beyond
        the result (a few microseconds for ten targets)."""
        rng = self.rng.random
        usable = [t for t in targets if self.available(t.key, t.upstream_model)]
        if not usable:
            now = self.clock()
            fallback = [t for t in targets if t.upstream_model not in self.host(t.key).missing]
            fallback.sort(key=lambda t: (max(self.host(t.key).cooldown_until - now, 0.0), t.priority))
            return fallback
        if self.strategy == "least_busy":
            hosts = self.hosts
            return sorted(
                usable,
                key=lambda t: (
                    t.priority,
                    hosts[t.key].streams_in_flight / t.weight if t.key in hosts else 0.0,
                    rng(),
                ),
            )
        # Weighted random order: key = u ** (1 / w), larger first; sort ascending by (priority, -key).
        return sorted(usable, key=lambda t: (t.priority, -(rng() ** (1.0 / t.weight))))

    def pick(self, targets: Sequence[Target]) -> Target:
        """The first choice only (benchmarks, weight checks)."""
        return self.plan(targets)[0]


def describe(error: ProviderError) -> str:
    return f"{error.code}: {error.message}"


def all_failed(failures: list[tuple[Target, ProviderError]], untried: Sequence[Target] = ()) -> ProviderError:
    parts = [f"{t.name} ({describe(e)})" for t, e in failures]
    parts += [f"{t.name} (not tried: unavailable or out of retries)" for t in untried]
    return ProviderError(
        "all_hosts_failed",
        "no host could serve the model: " + "; ".join(parts) if parts else "the model has no available host",
        status=502,
    )


class RoutedProvider:
    """A :class:`ChatProvider` over several :class:`Target` s (module docstring). One per request: it
    records the target that served it in :attr:`served_by`."""

    def __init__(self, targets: Sequence[Target], book: HostHealthBook) -> None:
        if not targets:
            raise ValueError("a routed model needs at least one target")
        self.targets = tuple(targets)
        self.book = book
        self.kind = self.targets[0].adapter.kind
        #: The target whose answer the client got (set at the first event), None before.
        self.served_by: Target | None = None

    def fresh(self) -> RoutedProvider:
        """A new routed adapter over the same targets (for the next request)."""
        return RoutedProvider(self.targets, self.book)

    async def stream_chat(
        self, request: ChatRequest, timeouts: Timeouts = Timeouts()
    ) -> AsyncGenerator[ChatEvent, None]:
        book = self.book
        plan = book.plan(self.targets)
        failures: list[tuple[Target, ProviderError]] = []
        retries_left = book.retries
        index = 0
        while index < len(plan):
            target = plan[index]
            index += 1
            health = book.host(target.key)
            started = False
            health.streams_in_flight += 1
            try:
                upstream = dataclasses.replace(request, model=target.upstream_model)
                async with aclosing(target.adapter.stream_chat(upstream, timeouts)) as events:
                    async for event in events:
                        if not started:
                            started = True
                            self.served_by = target
                            book.record_success(target.key)
                        if isinstance(event, Done):
                            event = dataclasses.replace(
                                event, served_by={"provider_id": target.key, "name": target.name}
                            )
                        yield event
                return
            except ProviderError as exc:
                if started:
                    raise
                if exc.code == "model_not_found":
                    book.record_missing(target.key, target.upstream_model, describe(exc))
                    failures.append((target, exc))
                    continue
                if exc.code not in RETRYABLE:
                    raise
                if exc.code not in _NOT_A_HOST_FAILURE:
                    book.record_failure(target.key, describe(exc))
                else:
                    book.host(target.key).last_error = describe(exc)
                failures.append((target, exc))
                if retries_left <= 0:
                    break
                retries_left -= 1
            finally:
                health.streams_in_flight -= 1
        if len(failures) == 1 and index >= len(plan) and len(plan) == 1:
            raise failures[0][1]
        raise all_failed(failures, plan[index:])

    async def embed(
        self, model: str, inputs: list[str], timeout: float
    ) -> tuple[list[list[float]], int | None]:
        """Embeddings from the first target that answers (same failover rules as the chat)."""
        failures: list[tuple[Target, ProviderError]] = []
        plan = self.book.plan(self.targets)
        retries_left = self.book.retries
        for index, target in enumerate(plan):
            embed: Any = getattr(target.adapter, "embed", None)
            if embed is None:
                continue
            try:
                result: tuple[list[list[float]], int | None] = await embed(
                    target.upstream_model, inputs, timeout
                )
            except ProviderError as exc:
                if exc.code == "model_not_found":
                    self.book.record_missing(target.key, target.upstream_model, describe(exc))
                elif exc.code in RETRYABLE:
                    self.book.record_failure(target.key, describe(exc))
                    if retries_left <= 0:
                        raise all_failed([*failures, (target, exc)], plan[index + 1 :]) from None
                    retries_left -= 1
                else:
                    raise
                failures.append((target, exc))
                continue
            self.served_by = target
            self.book.record_success(target.key)
            return result
        raise all_failed(failures)

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """The models of the first target that lists them."""
        error: ProviderError | None = None
        for target in self.book.plan(self.targets):
            try:
                return await target.adapter.list_models(timeout)
            except ProviderError as exc:
                error = exc
        raise error or all_failed([])

    async def aclose(self) -> None:
        return None


# --- probes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: float | None
    error: str | None = None
    #: Ollama: the models /api/ps reports loaded ``{"name", "size_vram", "size"}``.
    loaded: tuple[dict[str, Any], ...] = ()


def _clean_loaded(payload: Any) -> tuple[dict[str, Any], ...]:
    models = payload.get("models") if isinstance(payload, dict) else None
    out: list[dict[str, Any]] = []
    for entry in models if isinstance(models, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        vram, size = entry.get("size_vram"), entry.get("size")
        out.append(
            {
                "name": entry["name"][:256],
                "size_vram": vram if isinstance(vram, int) and not isinstance(vram, bool) else None,
                "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
            }
        )
    return tuple(out)


async def probe(
    client: httpx.AsyncClient,
    kind: str,
    base_url: str,
    *,
    api_key: str | None = None,
    timeout: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
) -> ProbeResult:
    """A cheap liveness check: Ollama ``GET /api/version`` (then ``/api/ps`` for the loaded models),
    OpenAI-compatible ``GET /models``. Never raises for an upstream failure."""
    base = base_url.rstrip("/")
    path = "/api/version" if kind == "ollama" else "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = clock()
    try:
        response = await client.get(base + path, headers=headers, timeout=timeout)
        latency = (clock() - started) * 1000.0
        if response.status_code >= 400:
            return ProbeResult(False, latency, f"HTTP {response.status_code} from {path}")
        loaded: tuple[dict[str, Any], ...] = ()
        if kind == "ollama":
            try:
                ps = await client.get(base + "/api/ps", timeout=timeout)
                if ps.status_code < 400:
                    loaded = _clean_loaded(ps.json())
            except (httpx.HTTPError, ValueError):
                pass
        return ProbeResult(True, latency, None, loaded)
    except httpx.TimeoutException:
        return ProbeResult(False, None, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ProbeResult(False, None, f"unreachable: {type(exc).__name__}")


def finite_weight(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 1.0
