"""The backup directory: retention, partial-file cleanup."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine

from server.services import backups
from server.settings import Settings


def test_retention_keeps_seven_days_plus_kept_ones(settings: Settings, engine: Engine) -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
    made = {}
    for age in (0, 1, 6, 7.5, 8, 10, 30):
        made[age] = backups.create_backup(settings, now=now - timedelta(days=age))
    store = backups.store_for(settings)
    store.set_keep(made[30].id, True)
    removed = store.prune(settings.backup_keep_days, now)
    assert sorted(removed) == sorted([made[7.5].id, made[8].id, made[10].id])
    left = {b.id for b in store.list()}
    assert left == {made[0].id, made[1].id, made[6].id, made[30].id}


def test_retention_never_removes_the_newest_verified_backup(settings: Settings, engine: Engine) -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
    only = backups.create_backup(settings, now=now - timedelta(days=40))
    assert backups.store_for(settings).prune(7, now) == []
    assert [b.id for b in backups.store_for(settings).list()] == [only.id]


def test_partials_and_orphans_are_cleaned_and_never_listed(settings: Settings, engine: Engine) -> None:
    good = backups.create_backup(settings)
    directory = settings.resolved_backup_dir
    (directory / ".tmp-20261127T000000Z-deadbeef").mkdir()
    (directory / ".20261127T000000Z-deadbeef.tar.gz.part").write_bytes(b"half")
    (directory / "20261127T000000Z-0badc0de.tar.gz").write_bytes(b"complete but never registered")
    (directory / "notes.txt").write_text("operator file")
    assert [b.id for b in backups.store_for(settings).list()] == [good.id]
    with backups.store_for(settings).lock():
        assert backups.store_for(settings).cleanup_partials() == 3
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [".lock", f"{good.id}.tar.gz", f"{good.id}.json", "notes.txt"]
    )
