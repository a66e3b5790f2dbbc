"""Fixtures of the backup service tests: settings with a daily 03:00 schedule and a migrated database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.bootstrap import prepare_database
from server.db.session import create_db_engine, create_session_factory
from server.settings import Settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}", backup_schedule="03:00"
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(settings.resolved_database_url)
    prepare_database(settings, engine, create_session_factory(engine))
    yield engine
    engine.dispose()
