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

    def require_codec(self) -> TokenCodec:
        if self.codec is None:
            raise RuntimeError("the app has not started (lifespan not run)")
        return self.codec
