"""Making backups: one writer at a time."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from server.services import backups
from server.settings import Settings


def test_a_second_writer_gets_a_clear_conflict(settings: Settings, engine: Engine) -> None:
    store = backups.store_for(settings)
    with store.lock(), pytest.raises(backups.BackupBusy):
        backups.create_backup(settings)
