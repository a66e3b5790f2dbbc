"""Runtime: what one app instance owns (settings, engine, sessions, token codec). Built by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.security.network_guard import GuardPolicy
from server.security.tokens import TokenCodec
from server.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    guard: GuardPolicy
    #: Sessions for requests that only read (GET/HEAD): DEFERRED transactions on SQLite.
    read_session_factory: sessionmaker[Session] | None = None
    codec: TokenCodec | None = None
    #: Extra per-app services registered by feature modules at start-up (ollama daemon, metrics...).
    extras: dict[str, Any] = field(default_factory=dict)

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
