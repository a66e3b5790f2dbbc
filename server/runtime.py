"""Runtime: what one app instance owns. ``create_app`` builds it; the lifespan fills in the services.

Every service an app instance owns has its own typed field here (no string-keyed lookup). Fields that
stay ``None`` mean "not started" (tests that build a bare runtime) or "not offered by this host" (``lan``
and ``desktop_token`` exist only in the desktop app). The service types are imported for type checking
only: the modules that define them import this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.security.api_key_hash import KeyHasher
from server.security.network_guard import GuardPolicy
from server.security.tokens import TokenCodec
from server.settings import Settings

if TYPE_CHECKING:
    from server.providers.registry import ProviderRegistry
    from server.security.desktop_token import DesktopToken
    from server.security.secret_store import SecretStore
    from server.services.alert_history import AlertNotifier
    from server.services.alerts import AlertCenter
    from server.services.backups import BackupScheduler
    from server.services.chat import StreamRegistry
    from server.services.cluster import ClusterWatcher
    from server.services.gateway import ResolutionCache
    from server.services.knowledge.index import VectorCache
    from server.services.knowledge.indexer import IndexerLoop
    from server.services.lan import LanControl
    from server.services.limits import LimitKeeper
    from server.services.memory import MemoryTrimmer
    from server.services.metrics import MetricsCollector
    from server.services.models import ModelDiscovery
    from server.services.ollama_daemon import OllamaDaemon
    from server.services.ollama_install import RuntimeInstaller
    from server.services.ollama_pulls import PullManager
    from server.services.retention import RetentionSweeper
    from server.services.routing import HostRouter
    from server.services.usage import UsageRecorder


@dataclass(eq=False)
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    guard: GuardPolicy
    #: Sessions for requests that only read (GET/HEAD): DEFERRED transactions on SQLite.
    read_session_factory: sessionmaker[Session] | None = None
    codec: TokenCodec | None = None
    #: The keyed hash of API keys, from the same server secret as ``codec`` (set by the lifespan).
    api_key_hasher: KeyHasher | None = None

    # --- services, wired by ``create_app`` and its lifespan ---------------------------------------------
    #: The shared upstream HTTP client and adapters (created on first use, closed at shutdown).
    provider_registry: ProviderRegistry | None = None
    #: This process's live chat replies.
    streams: StreamRegistry | None = None
    metrics: MetricsCollector | None = None
    alerts: AlertCenter | None = None
    #: The alert history writer and the outbound channels' delivery loop (services/alert_history.py).
    alert_notifier: AlertNotifier | None = None
    backup_scheduler: BackupScheduler | None = None
    #: The supervised ``ollama serve`` (when this instance manages one) and this process's pulls.
    ollama_daemon: OllamaDaemon | None = None
    ollama_pulls: PullManager | None = None
    #: Installs and updates the Ollama runtime in the data dir (one job at a time).
    ollama_installer: RuntimeInstaller | None = None
    #: Stop requests and pull listings shared with the other instances on the same database.
    cluster: ClusterWatcher | None = None
    #: The /v1 gateway's model-id resolutions, valid for one catalog generation (services/gateway.py).
    gateway_resolutions: ResolutionCache | None = None
    #: The cached model lists of the enabled providers.
    model_discovery: ModelDiscovery | None = None
    #: Where provider API keys are kept (MODELTRAIN_SECRET_STORE: the OS keyring or an encrypted file).
    secret_store: SecretStore | None = None
    #: Desktop host only: the LAN listener switch and the per-process desktop token.
    lan: LanControl | None = None
    desktop_token: DesktopToken | None = None
    #: Usage accounting: records queued in memory, written in batches (services/usage.py).
    usage: UsageRecorder | None = None
    #: Limits: this process's live reservations, their heartbeat and the sweep (services/limits.py).
    limits: LimitKeeper | None = None
    #: Host health, the routing of host groups' models and the probe loop (services/routing.py).
    routing: HostRouter | None = None
    #: The daily pruning of usage and audit history (services/retention.py).
    retention: RetentionSweeper | None = None
    #: Knowledge: this process's embedding matrices (services/knowledge/index.py) and its indexing loop
    #: (services/knowledge/indexer.py).
    knowledge_vectors: VectorCache | None = None
    knowledge_indexer: IndexerLoop | None = None
    #: Hands freed heap memory back to the OS every ``memory_trim_seconds`` (services/memory.py).
    memory_trimmer: MemoryTrimmer | None = None
    #: Wall-clock time in epoch seconds for limit windows and reservations; tests replace it.
    clock: Callable[[], float] = time.time

    def can_read_inline(self) -> bool:
        """Whether a short read may run on the event loop itself. On SQLite (a local file in WAL mode) a
        read never waits for a lock and takes well under a millisecond, less than handing it to a worker
        thread and back (two cross-thread wake-ups) — as long as a pooled connection is free, since
        waiting for one would stall the loop. Other databases are across a network: worker thread."""
        if self.engine.dialect.name != "sqlite":
            return False
        pool = self.engine.pool
        checkedout = getattr(pool, "checkedout", None)
        size = getattr(pool, "size", None)
        return checkedout is None or size is None or checkedout() < size()

    def require_codec(self) -> TokenCodec:
        if self.codec is None:
            raise RuntimeError("the app has not started (lifespan not run)")
        return self.codec

    def require_key_hasher(self) -> KeyHasher:
        if self.api_key_hasher is None:
            raise RuntimeError("the app has not started (lifespan not run)")
        return self.api_key_hasher
