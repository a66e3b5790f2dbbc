"""Start-up work shared by the CLI, the app lifespan and the desktop host: schema and first admin."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.db import migrate
from server.db.session import session_scope
from server.security.secret_store import ensure_private_dir
from server.services.users import InitialAdmin, ensure_initial_admin
from server.settings import Settings

log = logging.getLogger(__name__)


def prepare_database(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> InitialAdmin | None:
    """Upgrade the schema (snapshotting an existing SQLite file first) and create the first admin."""
    ensure_private_dir(settings.data_dir)
    if settings.migrate_on_start:
        migrate.upgrade(engine, settings.data_dir / "backups" / "pre-migration")
    with session_scope(session_factory) as session:
        return ensure_initial_admin(session, settings)
