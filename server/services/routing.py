"""Several hosts behind one model: host groups, their routing targets, and host health.

* **Host groups.** Ollama providers that an admin put in one group (``Provider.host_group``, API field
  ``group``) serve a model name together: ``/api/models`` lists it once as ``group:<group>:<model>``
  (services/models.py) and ``/v1/models`` once (services/gateway.py). :func:`group_targets` turns the
  group's enabled providers into routing targets; their ``priority`` and ``weight`` come from each
  provider (``route_priority``, ``route_weight``).
* **Routing and failover** are in :mod:`server.providers.routed` (:class:`RoutedProvider`), over the
  app's one :class:`HostHealthBook` (``Runtime.routing.book``).
* **Health.** Passive: the routed adapter records failures (exponential cool-down, capped). Active:
  :class:`HostRouter` probes every enabled provider every ``MODELTRAIN_HOST_PROBE_SECONDS`` and a
  cooled-down one as soon as it is due; a host that answers again is back in the rotation at once.
* **Hosts API** (:func:`list_hosts`): each provider with its state, last error, probe latency, streams in
  flight on this instance and (Ollama) the models loaded with their VRAM, from the last probe.

The health is this instance's view: each server process probes and routes on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import aio
from server.db.models import Provider
from server.db.session import session_scope
from server.errors import DomainError
from server.providers.base import ChatProvider
from server.providers.registry import get_registry
from server.providers.routed import HostHealthBook, ProbeResult, RoutedProvider, Target, finite_weight, probe
from server.schemas.host import HostList, HostModelRead, HostRead
from server.security.secret_store import get_secret_store
from server.services.providers import read_api_key

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostInfo:
    """A provider as the probe loop needs it, detached from the session."""

    id: uuid.UUID
    name: str
    kind: str
    base_url: str
    enabled: bool
    api_key: str | None = None

    @property
    def key(self) -> str:
        return str(self.id)


class HostRouter:
    """The app's routing state (``Runtime.routing``): the health book and the probe loop."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.probe_seconds = settings.host_probe_seconds
        self.probe_timeout = max(min(settings.models_discovery_timeout, self.probe_seconds), 0.5)
        self.book = HostHealthBook(
            retries=settings.route_retries,
            strategy=settings.route_strategy,
            cooldown=settings.host_cooldown_seconds,
            cooldown_max=settings.host_cooldown_max_seconds,
        )
        #: provider id (text) -> the last probe's result
        self.probes: dict[str, ProbeResult] = {}
        self.probe_rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.book.on_cooldown = self._replan

    def _replan(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- probes --------------------------------------------------------------------------------------

    async def probe_hosts(self, hosts: list[HostInfo]) -> None:
        client = get_registry(self.runtime).client

        async def one(host: HostInfo) -> None:
            result = await probe(
                client, host.kind, host.base_url, api_key=host.api_key, timeout=self.probe_timeout
            )
            self.probes[host.key] = result
            self.book.record_probe(host.key, result.ok, latency_ms=result.latency_ms, error=result.error)

        await asyncio.gather(*(one(h) for h in hosts if h.enabled))
        self.probe_rounds += 1

    async def probe_all(self) -> None:
        """Probe every enabled provider now (the loop's round; tests and ``POST /api/hosts/probe``)."""
        hosts = await anyio.to_thread.run_sync(load_hosts, self.runtime)
        await self.probe_hosts(hosts)

    async def probe_due(self) -> None:
        """Probe the hosts whose cool-down has ended (they failed and were not probed since)."""
        now = self.book.clock()
        due = {
            k for k, h in self.book.hosts.items() if h.consecutive_failures > 0 and h.cooldown_until <= now
        }
        if not due:
            return
        hosts = await anyio.to_thread.run_sync(load_hosts, self.runtime)
        await self.probe_hosts([h for h in hosts if h.key in due])

    # --- the loop ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)

    async def _run(self) -> None:
        assert self._wake is not None
        # The first round after one interval: a server that is started and stopped again at once (tests,
        # a CLI command) asks no host anything; GET /api/hosts probes on its first call instead.
        next_round = time.monotonic() + self.probe_seconds
        while True:
            now = time.monotonic()
            if now >= next_round:
                next_round = now + self.probe_seconds
                await self._safe(self.probe_all())
            else:
                await self._safe(self.probe_due())
            due = self.book.due()
            wake_at = min(next_round, due) if due is not None else next_round
            delay = max(wake_at - time.monotonic(), 0.0)
            self._wake.clear()
            with contextlib.suppress(*aio.TIMEOUT_ERRORS):  # not wait_for: it can swallow a cancellation
                async with aio.timeout(delay):
                    await self._wake.wait()

    @staticmethod
    async def _safe(work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("probing the hosts failed; trying again at the next round", exc_info=True)


def get_router(runtime: Runtime) -> HostRouter:
    """The app's router (the lifespan starts its loop; a bare runtime in tests gets an unstarted one)."""
    if runtime.routing is None:
        runtime.routing = HostRouter(runtime)
    return runtime.routing


async def start(runtime: Runtime) -> HostRouter:
    router = get_router(runtime)
    router.start()
    return router


async def stop(runtime: Runtime) -> None:
    if runtime.routing is not None:
        await runtime.routing.stop()


# --- providers -> hosts and targets -------------------------------------------------------------------


def load_hosts(runtime: Runtime) -> list[HostInfo]:
    """Every provider (blocking: DB and secret store; call it from a worker thread)."""
    secrets = get_secret_store(runtime)
    with session_scope(runtime.session_factory) as session:
        out: list[HostInfo] = []
        for row in session.scalars(select(Provider).order_by(Provider.name)):
            key: str | None = None
            if row.kind == "openai" and row.enabled:
                with contextlib.suppress(DomainError):  # a missing key: the probe reports the 401
                    key = read_api_key(secrets, row)
            out.append(HostInfo(row.id, row.name, row.kind, row.base_url, row.enabled, key))
        return out


def group_providers(session: Session, group: str) -> list[Provider]:
    """The enabled Ollama providers of ``group``: the default provider first, then by priority and name."""
    rows = session.scalars(
        select(Provider).where(
            Provider.host_group == group, Provider.kind == "ollama", Provider.enabled.is_(True)
        )
    ).all()
    return sorted(rows, key=lambda p: (not p.is_default, p.route_priority, p.name.lower()))


def group_targets(runtime: Runtime, providers: list[Provider], model: str) -> list[Target]:
    registry = get_registry(runtime)
    return [
        Target(
            key=str(p.id),
            name=p.name,
            adapter=registry.build(p),
            upstream_model=model,
            priority=p.route_priority,
            weight=finite_weight(p.route_weight),
        )
        for p in providers
    ]


def routed_adapter(runtime: Runtime, targets: list[Target]) -> ChatProvider:
    """One target: its own adapter; several: a :class:`RoutedProvider` over the app's health book."""
    if len(targets) == 1:
        return targets[0].adapter
    return RoutedProvider(targets, get_router(runtime).book)


# --- GET /api/hosts -------------------------------------------------------------------------------------


def _read(router: HostRouter, row: Provider) -> HostRead:
    key = str(row.id)
    health = router.book.hosts.get(key)
    result = router.probes.get(key)
    now = router.book.clock()
    return HostRead(
        id=row.id,
        name=row.name,
        kind=row.kind,
        base_url=row.base_url,
        group=row.host_group,
        priority=row.route_priority,
        weight=row.route_weight,
        is_default=row.is_default,
        enabled=row.enabled,
        state=router.book.state(key, enabled=row.enabled),
        last_error=health.last_error if health else None,
        probe_latency_ms=round(health.probe_latency_ms, 2) if health and health.probe_latency_ms else None,
        streams_in_flight=health.streams_in_flight if health else 0,
        consecutive_failures=health.consecutive_failures if health else 0,
        cooldown_seconds=round(max(health.cooldown_until - now, 0.0), 2) if health else 0.0,
        missing_models=sorted(health.missing) if health else [],
        probed=result is not None,
        loaded_models=[
            HostModelRead(name=m["name"], size_vram=m["size_vram"], size=m["size"])
            for m in (result.loaded if result else ())
        ],
    )


async def hosts_view(session: Session, runtime: Runtime, *, probe_now: bool = False) -> HostList:
    """``GET /api/hosts`` (probing first when nothing was probed yet) and ``POST /api/hosts/probe``."""
    router = get_router(runtime)
    if probe_now or router.probe_rounds == 0:
        await router.probe_all()
    return await anyio.to_thread.run_sync(list_hosts, session, runtime)


def list_hosts(session: Session, runtime: Runtime) -> HostList:
    router = get_router(runtime)
    rows = session.scalars(select(Provider).order_by(Provider.is_default.desc(), Provider.name)).all()
    return HostList(
        items=[_read(router, row) for row in rows],
        probe_seconds=router.probe_seconds,
        strategy=router.book.strategy,
        retries=router.book.retries,
    )
